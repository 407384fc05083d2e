using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace Iommu.Integration.Tests;

/// <summary>
/// Generates docs/kernel-map.md from the [KernelSymbol] attributes of the libraries, with the
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
        typeof(Uacce.UacceAssembly).Assembly,
    ];

    public static IReadOnlyList<Row> Collect()
    {
        var rows = new List<Row>();

        // One table over the libraries: <inheritdoc/> in one resolves to an interface in another.
        var docs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (Assembly asm in Libraries)
        {
            foreach ((string id, string text) in LoadDocs(asm))
            {
                docs[id] = text;
            }
        }

        foreach (Assembly asm in Libraries)
        {
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
                    string display = $"{TypeName(t)}.{(m is ConstructorInfo ? "ctor" : m.Name)}";
                    Add(rows, m, display, $"{prefix}{DocName(t)}.{name}", docs, InheritedDocIds(t, m));
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
        sb.Append(VersionSentence(rows)).Append("\n\n");
        sb.Append("| Kernel symbol | Version | C# member | Behaviour |\n");
        sb.Append("|---|---|---|---|\n");
        foreach (Row r in rows)
        {
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"| `{Escape(r.Symbol)}` | {Escape(r.Version)} | `{Escape(r.Member)}` | {Escape(r.Summary)} |\n");
        }

        return sb.ToString();
    }

    // The legend of the Version column, from the versions the rows carry, so it cannot go stale.
    private static string VersionSentence(IReadOnlyList<Row> rows)
    {
        var reference = new Version(5, 15);
        List<string> versions = rows.Select(r => r.Version).Where(v => v.Length != 0).Distinct(StringComparer.Ordinal).ToList();
        string Join(IEnumerable<string> vs) => string.Join(", ", vs.OrderBy(v => Version.TryParse(v, out Version? n) ? n : new Version(0, 0)));
        List<string> earlier = versions.Where(v => !Version.TryParse(v, out Version? n) || n < reference).ToList();
        List<string> later = versions.Where(v => Version.TryParse(v, out Version? n) && n > reference).ToList();
        var sb = new StringBuilder("Version is empty for Linux 5.15 (the reference). Otherwise it names the kernel the member follows");
        if (earlier.Count != 0)
        {
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $": an earlier one ({Join(earlier)}; \"seed v4\" is the 2018 posting) for a name or behaviour 5.15 no longer has");
        }

        if (later.Count != 0)
        {
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"{(earlier.Count != 0 ? ", or" : ":")} a later one ({Join(later)}) for a feature 5.15 lacks or a fix the model takes (the member's remarks say which)");
        }

        return sb.Append('.').ToString();
    }

    private static void Add(List<Row> rows, MemberInfo member, string display, string docPrefix, Dictionary<string, string> docs, IEnumerable<string>? inherited = null)
    {
        foreach (KernelSymbolAttribute a in member.GetCustomAttributes<KernelSymbolAttribute>(inherit: false))
        {
            // A member documented with <inheritdoc/> has no summary of its own: use the interface member's.
            string summary = Summary(docs, docPrefix);
            foreach (string id in inherited ?? [])
            {
                summary = summary.Length > 0 ? summary : Summary(docs, id);
            }

            rows.Add(new Row(a.Symbol, a.Version ?? string.Empty, display, summary));
        }
    }

    // Doc-id prefixes of the interface members a method of t implements (what <inheritdoc/> copies).
    private static IEnumerable<string> InheritedDocIds(Type t, MemberInfo m)
    {
        if (m is not MethodInfo method || t.IsInterface)
        {
            yield break;
        }

        foreach (Type i in t.GetInterfaces())
        {
            InterfaceMapping map = t.GetInterfaceMap(i);
            for (int k = 0; k < map.TargetMethods.Length; k++)
            {
                if (map.TargetMethods[k] == method)
                {
                    yield return $"M:{DocName(i)}.{map.InterfaceMethods[k].Name}";
                }
            }
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
                    sb.Append(CrefText(cref));
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

    // "M:Iommu.IommuCore.Unmap(Iommu.Domains.IDomain,System.UInt64)" -> "IommuCore.Unmap", "T:Iommu.Errno" -> "Errno":
    // the parameter list goes first, since its dots are not the member's.
    private static string CrefText(string cref)
    {
        if (cref.Length <= 2 || cref[1] != ':')
        {
            return cref;
        }

        string name = cref[2..].Split('(')[0];
        string[] parts = name.Split('.');
        string last = parts[^1].Replace("#ctor", "ctor", StringComparison.Ordinal);
        int arity = last.IndexOf('`', StringComparison.Ordinal);
        last = arity < 0 ? last : last[..arity];
        return cref[0] == 'T' || cref[0] == 'N' || parts.Length < 2 ? last : $"{parts[^2].Split('`')[0]}.{last}";
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
