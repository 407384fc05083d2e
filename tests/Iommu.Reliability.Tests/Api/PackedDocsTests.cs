using System.Reflection;
using System.Xml.Linq;

namespace Iommu.Reliability.Tests.Api;

/// <summary>
/// The XML documentation shipped beside each library (and packed with it) documents what a user can
/// see and nothing else (issue 17: it used to carry internal and private members). Visibility is read
/// here by reflection, independently of the build step that filters the file (eng/PublicDocs.cs).
/// </summary>
public sealed class PackedDocsTests
{
    public static TheoryData<string> Libraries => new() { "Iommu.Core", "Iommu.VtD", "Vfio.Mdev", "Vfio.Type1" };

    [Theory]
    [MemberData(nameof(Libraries))]
    public void The_xml_documentation_names_public_members_only_and_every_public_type(string library)
    {
        Assembly assembly = Assembly.Load(library);
        string xml = Path.ChangeExtension(assembly.Location, ".xml");
        HashSet<string> documented = XDocument.Load(xml).Root!.Element("members")!.Elements("member")
            .Select(m => (string)m.Attribute("name")!).ToHashSet(StringComparer.Ordinal);
        HashSet<string> visible = VisibleNames(assembly);

        string[] leaked = [.. documented.Where(id => !visible.Contains(NameOf(id))).Order(StringComparer.Ordinal)];
        string[] undocumented = [.. assembly.GetExportedTypes().Select(t => "T:" + DocName(t)).Where(id => !documented.Contains(id))];

        Assert.True(leaked.Length == 0, $"{xml} documents members a user cannot see:\n  " + string.Join("\n  ", leaked));
        Assert.True(undocumented.Length == 0, $"{xml} lacks public types:\n  " + string.Join("\n  ", undocumented));
        Assert.Contains(documented, id => id.StartsWith("M:", StringComparison.Ordinal)); // the check saw members at all
    }

    // "M:Ns.Type.Name``1(System.Int32)~X" -> "M:Ns.Type.Name": overloads are told apart by the filter's exact IDs; here by name.
    private static string NameOf(string id)
    {
        int end = id.IndexOfAny(['(', '~']);
        string head = end < 0 ? id : id[..end];
        int ticks = head.IndexOf("``", StringComparison.Ordinal);
        return ticks < 0 ? head : head[..ticks];
    }

    private static HashSet<string> VisibleNames(Assembly assembly)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Type t in assembly.GetExportedTypes())
        {
            string type = DocName(t);
            names.Add("T:" + type);
            foreach (MemberInfo m in t.GetMembers(all))
            {
                string? kind = m switch
                {
                    MethodBase mb when mb.IsPublic || mb.IsFamily || mb.IsFamilyOrAssembly => "M:",
                    FieldInfo f when f.IsPublic || f.IsFamily || f.IsFamilyOrAssembly => "F:",
                    PropertyInfo p when p.GetAccessors(nonPublic: true).Any(a => a.IsPublic || a.IsFamily || a.IsFamilyOrAssembly) => "P:",
                    EventInfo e when e.AddMethod is { } add && (add.IsPublic || add.IsFamily || add.IsFamilyOrAssembly) => "E:",
                    _ => null,
                };
                if (kind is not null)
                {
                    names.Add(kind + type + "." + m.Name.Replace('.', '#'));
                }
            }
        }

        return names;
    }

    private static string DocName(Type t) => t.FullName!.Replace('+', '.');
}
