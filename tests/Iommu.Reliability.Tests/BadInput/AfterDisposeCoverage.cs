using System.Reflection;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>The public members the "after dispose" coverage check asks a row or an exemption for.</summary>
internal static class AfterDisposeCoverage
{
    private static readonly HashSet<string> ObjectMembers = ["Equals", "GetHashCode", "ToString", "Deconstruct", "PrintMembers", "<Clone>$", "GetType"];

    /// <summary>Every public constructor, method and property declared by <paramref name="t"/>, as <c>Type..ctor</c> / <c>Type.Name</c> (overloads share a name).</summary>
    public static IEnumerable<(string Name, MemberInfo Info)> Members(Type t)
    {
        const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (ConstructorInfo c in t.GetConstructors())
        {
            yield return (t.Name + "..ctor", c);
        }

        foreach (MethodInfo m in t.GetMethods(flags).Where(m => !m.IsSpecialName && !ObjectMembers.Contains(m.Name)).OrderBy(m => m.ToString(), StringComparer.Ordinal))
        {
            yield return (t.Name + "." + m.Name, m);
        }

        foreach (PropertyInfo p in t.GetProperties(flags).OrderBy(p => p.Name, StringComparer.Ordinal))
        {
            if (p.GetMethod is { IsPublic: true })
            {
                yield return (t.Name + "." + p.Name, p);
            }

            if (p.SetMethod is { IsPublic: true })
            {
                yield return (t.Name + "." + p.Name + ".set", p);
            }
        }
    }
}
