using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace Iommu.Integration.Tests;

/// <summary>
/// Generates docs/kernel-map.md from the [KernelSymbol] attributes of the four libraries, with the
/// first sentence of each member's XML summary as its one-line behaviour.
/// </summary>
internal static partial class KernelMap
{
    public static readonly Assembly[] Libraries =
    [
        typeof(IommuCore).Assembly,
        typeof(Iommu.VtD.VtdAssembly).Assembly,
        typeof(Vfio.Mdev.MdevAssembly).Assembly,
        typeof(Vfio.Type1.Type1Assembly).Assembly,
    ];

    public static IReadOnlyList<Row> Collect()
    {
        var rows = new List<Row>();
        foreach (Assembly asm in Libraries)
        {
            Dictionary<string, string> docs = LoadDocs(asm);
            foreach (Type t in asm.GetExportedTypes())
            {
                Add(rows, t, TypeName(t), $"T:{DocName(t)}", docs);
                foreach (MemberInfo m in t.GetMembers(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
                {
                    string prefix = m.MemberType switch
                    {
                        MemberTypes.Method or MemberTypes.Constructor => "M:",
                        MemberTypes.Property => "P:",
                        MemberTypes.Field => "F:",
                        MemberTypes.Event => "E:",
                        _ => "?:",
                    };
                    string name = m is ConstructorInfo ? "#ctor" : m.Name;
                    Add(rows, m, $"{TypeName(t)}.{(m is ConstructorInfo ? "ctor" : m.Name)}", $"{prefix}{DocName(t)}.{name}", docs);
                }
            }
        }

        return rows
            .Distinct()
            .OrderBy(r => r.Symbol, StringComparer.Ordinal)
            .ThenBy(r => r.Member, StringComparer.Ordinal)
            .ToList();
    }

    public static string Render(IReadOnlyList<Row> rows)
    {
        var sb = new StringBuilder();
        sb.Append("# Kernel symbol map\n\n");
        sb.Append("Every C# member that mirrors a Linux kernel symbol carries `[KernelSymbol(\"...\")]`. This table is\n");
        sb.Append("generated from those attributes by `tests/Iommu.Integration.Tests` (`KernelMapTests`), which fails\n");
        sb.Append("when it is out of date. Regenerate with `IOMMU_UPDATE_DOCS=1 dotnet test tests/Iommu.Integration.Tests`.\n");
        sb.Append("Version is empty for Linux 5.15 (the reference) and names the seed (v4, 2018) or 5.10 otherwise.\n\n");
        sb.Append("| Kernel symbol | Version | C# member | Behaviour |\n");
        sb.Append("|---|---|---|---|\n");
        foreach (Row r in rows)
        {
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"| `{Escape(r.Symbol)}` | {Escape(r.Version)} | `{Escape(r.Member)}` | {Escape(r.Summary)} |\n");
        }

        return sb.ToString();
    }

    private static void Add(List<Row> rows, MemberInfo member, string display, string docPrefix, Dictionary<string, string> docs)
    {
        foreach (KernelSymbolAttribute a in member.GetCustomAttributes<KernelSymbolAttribute>(inherit: false))
        {
            rows.Add(new Row(a.Symbol, a.Version ?? string.Empty, display, Summary(docs, docPrefix)));
        }
    }

    private static string Summary(Dictionary<string, string> docs, string prefix)
    {
        // Overloads share the first sentence of the first documented overload (ordinal order of doc ids).
        string? text = docs.Where(kv => kv.Key == prefix || kv.Key.StartsWith(prefix + "(", StringComparison.Ordinal))
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => kv.Value)
            .FirstOrDefault();
        if (text is null)
        {
            return string.Empty;
        }

        Match end = SentenceEnd().Match(text);
        return end.Success ? text[..(end.Index + 1)] : text;
    }

    private static Dictionary<string, string> LoadDocs(Assembly asm)
    {
        string xml = Path.ChangeExtension(asm.Location, ".xml");
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!File.Exists(xml))
        {
            throw new FileNotFoundException($"XML documentation of {asm.GetName().Name} not found next to the assembly.", xml);
        }

        foreach (XElement m in XDocument.Load(xml).Descendants("member"))
        {
            XElement? summary = m.Element("summary");
            if (summary is not null)
            {
                map[(string)m.Attribute("name")!] = Flatten(summary);
            }
        }

        return map;
    }

    private static string Flatten(XElement e)
    {
        var sb = new StringBuilder();
        foreach (XNode n in e.Nodes())
        {
            switch (n)
            {
                case XText t:
                    sb.Append(t.Value);
                    break;
                case XElement x when x.Name == "see" || x.Name == "seealso":
                    string cref = (string?)x.Attribute("cref") ?? (string?)x.Attribute("langword") ?? string.Empty;
                    sb.Append(cref.Length > 2 && cref[1] == ':' ? cref[(cref.LastIndexOf('.') + 1)..].Split('(')[0] : cref);
                    break;
                case XElement x when x.Name == "paramref" || x.Name == "typeparamref":
                    sb.Append((string?)x.Attribute("name"));
                    break;
                case XElement x:
                    sb.Append(Flatten(x));
                    break;
            }
        }

        return Spaces().Replace(sb.ToString(), " ").Trim();
    }

    private static string TypeName(Type t) => t.IsNested ? $"{TypeName(t.DeclaringType!)}.{t.Name}" : t.Name;

    private static string DocName(Type t) => t.FullName!.Replace('+', '.');

    private static string Escape(string s) => s.Replace("|", "\\|", StringComparison.Ordinal);

    // A full stop followed by a space and a capital, not the one in "e.g." or "i.e.".
    [GeneratedRegex(@"(?<!\b(?:e\.g|i\.e))\.\s+(?=[A-Z])")]
    private static partial Regex SentenceEnd();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();

    public sealed record Row(string Symbol, string Version, string Member, string Summary);
}
