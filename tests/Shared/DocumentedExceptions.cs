using System.Collections.Concurrent;
using System.Xml.Linq;

namespace Iommu.Tests.Shared;

/// <summary>
/// The exceptions a public member's XML docs list (<c>&lt;exception cref="..."/&gt;</c>), read from the
/// documentation files the libraries ship next to their assemblies. A member is named without its
/// parameter list ("Iommu.IommuCore.DomainFree"); its overloads' lists are merged. The libraries a test project
/// does not reference (no documentation file beside it) are skipped. Shared by linking (tests/Shared is no project).
/// </summary>
internal static class DocumentedExceptions
{
    private static readonly ConcurrentDictionary<string, IReadOnlySet<string>> s_byMember = Load();

    /// <summary>Whether <paramref name="member"/>'s docs list <paramref name="exception"/>'s type (or a base type of it).</summary>
    public static bool Allows(string member, Exception exception)
    {
        if (!s_byMember.TryGetValue(member, out IReadOnlySet<string>? allowed))
        {
            throw new InvalidOperationException($"no XML docs for {member}: the caller names a member that does not exist");
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
        foreach (string library in new[] { "Iommu.Core", "Iommu.VtD", "Vfio.Mdev", "Vfio.Type1", "Uacce" })
        {
            string path = Path.Combine(dir, library + ".xml");
            if (!File.Exists(path))
            {
                continue;
            }

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
