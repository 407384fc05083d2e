using System.Reflection;
using System.Text.RegularExpressions;

namespace Iommu.Integration.Tests;

/// <summary>
/// The user documents name members as <c>`Type.Member`</c>; a newcomer types those names. Every such name
/// whose type is one of the libraries' types must name a member (or nested type, or extension method) of it,
/// so a rename that leaves a document behind fails here.
/// </summary>
public sealed partial class DocMemberNameTests
{
    private static readonly string[] Documents =
    [
        "README.md", "docs/concepts.md", "docs/architecture.md", "docs/embedding-vtd.md", "docs/vendor-mdev-driver.md",
        "docs/vtd-image-format.md", "docs/metrics.md", "docs/sva-and-pasid.md", "src/Iommu.Core/PACKAGE.md", "src/Iommu.VtD/PACKAGE.md",
        "src/Vfio.Mdev/PACKAGE.md", "src/Vfio.Type1/PACKAGE.md", "src/Uacce/PACKAGE.md",
    ];

    [Fact]
    public void Every_type_dot_member_a_document_names_exists()
    {
        Assembly[] libraries =
        [
            typeof(Platform).Assembly, typeof(Iommu.VtD.Hardware.VtdUnit).Assembly, typeof(Vfio.Mdev.MdevCore).Assembly,
            typeof(Vfio.Type1.VfioCore).Assembly, typeof(Uacce.UacceCore).Assembly,
        ];
        Type[] types = [.. libraries.SelectMany(a => a.GetTypes())];
        ILookup<string, Type> byName = types.ToLookup(t => t.Name.Split('`')[0], StringComparer.Ordinal);
        MethodInfo[] extensions =
        [
            .. types.Where(t => t.IsAbstract && t.IsSealed)
                .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Static))
                .Where(m => m.IsDefined(typeof(System.Runtime.CompilerServices.ExtensionAttribute), false)),
        ];

        var missing = new List<string>();
        foreach (string document in Documents)
        {
            string text = File.ReadAllText(Path.Combine(RepoPaths.Root, document));
            foreach (Match m in Code().Matches(text))
            {
                string span = m.Groups[1].Value;
                Match name = TypeDotMember().Match(span);
                if (!name.Success || span.EndsWith(".cs", StringComparison.Ordinal) || !byName.Contains(name.Groups[1].Value))
                {
                    continue; // not a library type (BCL, benchmark class, file name)
                }

                string member = name.Groups[2].Value;
                bool found = byName[name.Groups[1].Value].Any(t => HasMember(t, member))
                    || extensions.Any(e => e.Name == member && byName[name.Groups[1].Value].Any(t => e.GetParameters()[0].ParameterType.IsAssignableFrom(t)));
                if (!found)
                {
                    missing.Add($"{document}: `{span}`");
                }
            }
        }

        Assert.True(missing.Count == 0, "names no member:\n" + string.Join("\n", missing.Distinct()));
    }

    private static bool HasMember(Type type, string member)
    {
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.FlattenHierarchy;
        return type.GetMember(member, all).Length > 0
            || type.GetInterfaces().Any(i => i.GetMember(member, all).Length > 0)
            || (type.BaseType is Type b && HasMember(b, member));
    }

    [GeneratedRegex(@"`([^`\n]+)`")]
    private static partial Regex Code();

    [GeneratedRegex(@"^([A-Z]\w*)\.([A-Z]\w*)")]
    private static partial Regex TypeDotMember();
}
