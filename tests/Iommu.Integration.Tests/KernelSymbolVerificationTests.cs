using System.Reflection;

namespace Iommu.Integration.Tests;

/// <summary>
/// Every <see cref="KernelSymbolAttribute"/> without a <see cref="KernelSymbolAttribute.Version"/> claims a Linux 5.15
/// name. eng/update-kernel-symbols.sh checks those names against a 5.15 source tree and lists the ones it found in
/// eng/kernel-symbols-5.15.txt; this test holds the attributes to that list, so a name the kernel does not have (an
/// older kernel's, a misspelling, QEMU's) fails here, not in a reader's grep.
/// </summary>
public sealed class KernelSymbolVerificationTests
{
    private static string ListPath => Path.Combine(RepoPaths.Root, "eng", "kernel-symbols-5.15.txt");

    [Fact]
    public void Every_unversioned_KernelSymbol_was_found_in_the_5_15_tree_and_the_list_has_no_stale_names()
    {
        HashSet<string> verified = File.ReadLines(ListPath)
            .Where(l => l.Length != 0 && !l.StartsWith('#'))
            .ToHashSet(StringComparer.Ordinal);
        SortedDictionary<string, string> used = Unversioned();

        string[] unverified = used.Where(u => !verified.Contains(u.Key)).Select(u => $"{u.Key} ({u.Value})").ToArray();
        string[] stale = verified.Where(v => !used.ContainsKey(v)).Order(StringComparer.Ordinal).ToArray();
        Assert.True(
            unverified.Length == 0 && stale.Length == 0,
            "Run eng/update-kernel-symbols.sh /path/to/linux-5.15 (a name it cannot find needs fixing, or the Version it comes from).\n"
            + $"Not verified:\n{string.Join('\n', unverified)}\nNo longer used:\n{string.Join('\n', stale)}");
        Assert.True(used.Count > 500, $"only {used.Count} unversioned symbols found: the reflection walk is missing members");
    }

    // Symbol -> the first member that names it, over every type and member of the libraries, public or not.
    private static SortedDictionary<string, string> Unversioned()
    {
        var used = new SortedDictionary<string, string>(StringComparer.Ordinal);
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (Assembly asm in KernelMap.Libraries)
        {
            foreach (Type t in asm.GetTypes())
            {
                Add(t, t.FullName ?? t.Name);
                foreach (MemberInfo m in t.GetMembers(all))
                {
                    Add(m, $"{t.FullName}.{m.Name}");
                }
            }
        }

        return used;

        void Add(MemberInfo m, string where)
        {
            foreach (KernelSymbolAttribute a in m.GetCustomAttributes<KernelSymbolAttribute>(inherit: false))
            {
                if (a.Version is null)
                {
                    used.TryAdd(a.Symbol, where);
                }
            }
        }
    }
}
