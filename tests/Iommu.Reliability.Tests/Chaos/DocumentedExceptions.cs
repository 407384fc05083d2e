using System.Collections.Concurrent;
using System.Reflection;
using System.Xml.Linq;

namespace Iommu.Reliability.Tests.Chaos;

/// <summary>
/// The exceptions a public member's XML docs list (<c>&lt;exception cref="..."/&gt;</c>), read from the
/// documentation files the libraries ship next to their assemblies. A member is named without its
/// parameter list ("Iommu.IommuCore.DomainFree"); its overloads' lists are merged.
/// </summary>
internal static class DocumentedExceptions
{
    private static readonly ConcurrentDictionary<string, IReadOnlySet<string>> s_byMember = Load();

    /// <summary>Whether <paramref name="member"/>'s docs list <paramref name="exception"/>'s type (or a base type of it).</summary>
    public static bool Allows(string member, Exception exception)
    {
        if (!s_byMember.TryGetValue(member, out IReadOnlySet<string>? allowed))
        {
            throw new InvalidOperationException($"no XML docs for {member}: the chaos property names a member that does not exist");
        }

        for (Type? t = exception.GetType(); t is not null && t != typeof(object); t = t.BaseType)
        {
            if (allowed.Contains(t.FullName!))
            {
                return true;
            }
        }

        return false;
    }

    private static ConcurrentDictionary<string, IReadOnlySet<string>> Load()
    {
        var map = new ConcurrentDictionary<string, IReadOnlySet<string>>(StringComparer.Ordinal);
        string dir = Path.GetDirectoryName(typeof(DocumentedExceptions).Assembly.Location)!;
        foreach (Assembly a in new[] { typeof(IommuCore).Assembly, typeof(Iommu.VtD.Driver.IntelIommu).Assembly, typeof(Vfio.Mdev.MdevCore).Assembly, typeof(Vfio.Type1.VfioCore).Assembly, typeof(global::Uacce.UacceCore).Assembly })
        {
            string path = Path.Combine(dir, a.GetName().Name + ".xml");
            foreach (XElement m in XDocument.Load(path).Descendants("member"))
            {
                string id = (string)m.Attribute("name")!;
                if (id.Length < 3 || id[1] != ':')
                {
                    continue;
                }

                int paren = id.IndexOf('(', StringComparison.Ordinal);
                string key = paren < 0 ? id[2..] : id[2..paren];
                var set = (HashSet<string>)map.GetOrAdd(key, _ => new HashSet<string>(StringComparer.Ordinal));
                foreach (XElement e in m.Elements("exception"))
                {
                    string cref = (string)e.Attribute("cref")!;
                    set.Add(cref.StartsWith("T:", StringComparison.Ordinal) ? cref[2..] : cref);
                }
            }
        }

        return map;
    }
}
