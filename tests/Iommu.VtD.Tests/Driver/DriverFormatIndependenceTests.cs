using System.Text;
using System.Text.RegularExpressions;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// One home per format and per side: the driver writes every VT-d bit it encodes or decodes in its own
/// <c>Driver/Format</c> files, as Linux does in its headers, and the hardware model never uses driver
/// code. If the driver borrowed the hardware's <c>VtdFormat</c>, <c>VtdCap</c> or <c>VtdEcap</c>, a
/// misread bit position would be shared by both sides, and the tests where the driver builds tables
/// and the model walks them could not see it. Constants are inlined at compile time, so the check
/// reads the sources (code only: comments and string literals are skipped).
/// </summary>
public sealed partial class DriverFormatIndependenceTests
{
    [Fact]
    public void The_driver_writes_its_own_bits_and_never_names_the_hardware_encodings()
    {
        List<string> violations = Scan(Path.Combine(RepoRoot, "src", "Iommu.VtD", "Driver"), HardwareEncoding());
        Assert.True(violations.Count == 0, "the driver uses the hardware's bit constants:\n  " + string.Join("\n  ", violations));
    }

    [Fact]
    public void The_hardware_model_uses_no_driver_code()
    {
        List<string> violations = Scan(Path.Combine(RepoRoot, "src", "Iommu.VtD", "Hardware"), DriverNamespace());
        Assert.True(violations.Count == 0, "the hardware model uses the driver's code:\n  " + string.Join("\n  ", violations));
    }

    [Fact]
    public void The_scan_sees_code_and_skips_comments_and_strings()
    {
        // The checks above are only as good as this: a use in code is found, whatever the form, and
        // the same words in a comment or a string are not.
        const string source = """
            using F = Iommu.VtD.Hardware.VtdFormat;
            // VtdFormat.Present in a line comment
            /// <summary>VtdCap in a doc comment</summary>
            /* VtdEcap.Qi in a block comment */
            class C
            {
                string s = "VtdFormat.Present";
                string v = @"VtdCap ""quoted"" ";
                char c = '"';
                string t = $"{{ {(b ? "VtdFormat" : "x")} VtdCap {n}";
                ulong a = VtdCap.Rwbf | Hardware.VtdEcap.Qi;
                object d = Iommu.VtD.Driver.Format.QiDescriptor.PcGlobal;
                object e = Driver.IntelIommu.Create;
            }
            """;
        string code = CodeOnly(source);
        Assert.Equal(3, HardwareEncoding().Count(code));
        Assert.Equal(2, DriverNamespace().Count(code));
        Assert.DoesNotContain("Present", code, StringComparison.Ordinal);
    }

    private static string RepoRoot { get; } = FindRoot();

    private static string FindRoot()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "Iommu.sln")))
            {
                return d.FullName;
            }
        }

        throw new InvalidOperationException($"No Iommu.sln above {AppContext.BaseDirectory}.");
    }

    private static List<string> Scan(string dir, Regex forbidden)
    {
        Assert.True(Directory.Exists(dir), dir);
        string[] files = Directory.GetFiles(dir, "*.cs", SearchOption.AllDirectories);
        Assert.NotEmpty(files);
        var found = new List<string>();
        foreach (string file in files.Order(StringComparer.Ordinal))
        {
            string[] lines = CodeOnly(File.ReadAllText(file)).Split('\n');
            for (int i = 0; i < lines.Length; i++)
            {
                foreach (Match m in forbidden.Matches(lines[i]))
                {
                    found.Add($"{Path.GetRelativePath(RepoRoot, file)}:{i + 1}: {m.Value}");
                }
            }
        }

        return found;
    }

    /// <summary>The source with comments and string/char literals blanked out, line breaks kept.</summary>
    private static string CodeOnly(string source)
    {
        var sb = new StringBuilder(source.Length);
        int i = 0;
        while (i < source.Length)
        {
            char c = source[i];
            char next = i + 1 < source.Length ? source[i + 1] : '\0';
            if (c == '/' && next == '/')
            {
                while (i < source.Length && source[i] != '\n')
                {
                    i++;
                }
            }
            else if (c == '/' && next == '*')
            {
                int end = source.IndexOf("*/", i + 2, StringComparison.Ordinal);
                end = end < 0 ? source.Length : end + 2;
                sb.Append(' ').Append(new string('\n', source.AsSpan(i, end - i).Count('\n')));
                i = end;
            }
            else if (c == '"' || c == '\'' || (c == '@' && next == '"') || (c == '$' && (next == '"' || next == '@')))
            {
                i = SkipLiteral(source, i);
                sb.Append("\"\"");
            }
            else
            {
                sb.Append(c);
                i++;
            }
        }

        return sb.ToString();
    }

    // Skips one string or char literal from its first character (a quote, '@' or '$'); the holes of an
    // interpolated string are skipped with it, literals nested in them included.
    private static int SkipLiteral(string s, int i)
    {
        bool verbatim = false, interpolated = false;
        while (s[i] is '$' or '@')
        {
            verbatim |= s[i] == '@';
            interpolated |= s[i] == '$';
            i++;
        }

        char quote = s[i++];
        while (i < s.Length)
        {
            if (!verbatim && s[i] == '\\')
            {
                i += 2;
            }
            else if (interpolated && s[i] == '{')
            {
                if (i + 1 < s.Length && s[i + 1] == '{')
                {
                    i += 2;
                    continue;
                }

                int depth = 0;
                do
                {
                    if (s[i] is '"' or '\'' or '$' or '@' && (s[i] is '"' or '\'' || (i + 1 < s.Length && s[i + 1] is '"' or '$' or '@')))
                    {
                        i = SkipLiteral(s, i);
                        continue;
                    }

                    depth += s[i] == '{' ? 1 : s[i] == '}' ? -1 : 0;
                    i++;
                }
                while (depth > 0 && i < s.Length);
            }
            else if (s[i] == quote)
            {
                if (verbatim && i + 1 < s.Length && s[i + 1] == quote)
                {
                    i += 2;
                }
                else
                {
                    return i + 1;
                }
            }
            else
            {
                i++;
            }
        }

        return i;
    }

    [GeneratedRegex(@"\bVtd(Format|Cap|Ecap)\b")]
    private static partial Regex HardwareEncoding();

    [GeneratedRegex(@"\bIommu\.VtD\.Driver\b|(?<![\w.])Driver\.[A-Z]")]
    private static partial Regex DriverNamespace();
}
