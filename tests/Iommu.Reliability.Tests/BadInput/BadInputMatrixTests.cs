using System.Reflection;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Hardware;
using Vfio.Mdev;
using Vfio.Type1;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>
/// The bad-input matrix over the public entry points of Iommu.Core, Iommu.VtD, Vfio.Mdev and Vfio.Type1:
/// each row calls one entry point with a null / out-of-range / unaligned / overflowing argument in a fresh
/// <see cref="BadInputBed"/> and checks the errno (Linux number), the documented .NET exception, or the
/// documented "nothing happened" value. A reflection check keeps the matrix complete.
/// </summary>
public sealed class BadInputMatrixTests(ITestOutputHelper output)
{
    public static TheoryData<string> RowIds()
    {
        var data = new TheoryData<string>();
        foreach (string id in BadInputMatrix.All.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            data.Add(id);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(RowIds))]
    public void Bad_input_gives_the_documented_errno_or_exception(string id)
    {
        BadInputRow row = BadInputMatrix.All[id];
        using var ctx = new BadInputBed();
        object? result = null;
        Exception? thrown = null;
        try
        {
            result = row.Call(ctx);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            thrown = ex;
        }

        string got = thrown is not null ? $"threw {thrown.GetType().Name}: {thrown.Message}" : $"returned {Show(result)}";
        switch (row.Expect)
        {
            case BadInputOutcome.Throws t:
                Assert.True(thrown is not null && thrown.GetType() == t.Exception, $"{id}: expected {row.Expect}, {got}");
                break;
            case BadInputOutcome.Returns e:
                Assert.True(thrown is null, $"{id}: expected {row.Expect}, {got}");
                Assert.True(MatchesErrno(result, e.Errno), $"{id}: expected {row.Expect}, {got}");
                break;
            case BadInputOutcome.Is v:
                Assert.True(thrown is null, $"{id}: expected {row.Expect}, {got}");
                Assert.True(Equals(v.Value, result), $"{id}: expected {row.Expect}, {got}");
                break;
        }
    }

    /// <summary>
    /// Every public method or constructor with parameters of every exported class or struct of the four
    /// libraries has a row, or its type or the member has a reasoned exemption; stale exemptions fail too.
    /// </summary>
    [Fact]
    public void Every_public_entry_point_has_a_row_or_a_reasoned_exemption()
    {
        var covered = BadInputMatrix.All.Values.Select(r => r.Member).ToHashSet(StringComparer.Ordinal);
        var missing = new List<string>();
        var seenMembers = new HashSet<string>(StringComparer.Ordinal);
        var seenTypes = new HashSet<string>(StringComparer.Ordinal);
        int types = 0;
        foreach (Type t in PublicTypes())
        {
            seenTypes.Add(t.Name);
            if (BadInputExemptions.Types.ContainsKey(t.Name))
            {
                continue;
            }

            types++;
            foreach (string m in EntryPoints(t))
            {
                seenMembers.Add(m);
                if (!covered.Contains(m) && !BadInputExemptions.Members.ContainsKey(m))
                {
                    missing.Add(m);
                }
            }
        }

        string[] unknownRows = [.. covered.Where(m => !seenMembers.Contains(m)).Order(StringComparer.Ordinal)];
        string[] staleTypes = [.. BadInputExemptions.Types.Keys.Where(k => !seenTypes.Contains(k))];
        string[] staleMembers = [.. BadInputExemptions.Members.Keys.Where(k => !seenMembers.Contains(k) || covered.Contains(k))];
        output.WriteLine($"{BadInputMatrix.All.Count} rows over {covered.Count} entry points of {types} types; {BadInputExemptions.Types.Count} types and {BadInputExemptions.Members.Count} members exempt.");
        Assert.True(missing.Count == 0, "entry points with neither a bad-input row nor an exemption:\n  " + string.Join("\n  ", missing));
        Assert.True(unknownRows.Length == 0, "rows naming no public entry point (typo or removed member):\n  " + string.Join("\n  ", unknownRows));
        Assert.True(staleTypes.Length == 0 && staleMembers.Length == 0, "stale exemptions (type gone, member gone, or now covered by a row): " + string.Join(", ", staleTypes.Concat(staleMembers)));
    }

    internal static IEnumerable<Type> PublicTypes() =>
        new[] { typeof(Platform).Assembly, typeof(VtdUnit).Assembly, typeof(MdevCore).Assembly, typeof(VfioCore).Assembly, typeof(global::Uacce.UacceCore).Assembly }
            .SelectMany(a => a.GetExportedTypes())
            .Where(t => (t.IsClass || t.IsValueType) && !t.IsEnum && !typeof(Delegate).IsAssignableFrom(t) && !t.IsNested)
            .OrderBy(t => t.FullName, StringComparer.Ordinal);

    internal static IEnumerable<string> EntryPoints(Type t)
    {
        if (t.GetConstructors().Any(c => c.GetParameters().Length > 0))
        {
            yield return t.Name + "..ctor";
        }

        const BindingFlags flags = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (string name in t.GetMethods(flags)
                     .Where(m => !m.IsSpecialName && m.GetParameters().Length > 0 && m.Name is not ("Equals" or "Deconstruct" or "PrintMembers" or "<Clone>$"))
                     .Select(m => m.Name).Distinct().Order(StringComparer.Ordinal))
        {
            yield return t.Name + "." + name;
        }
    }

    private static bool MatchesErrno(object? result, Errno e) => result switch
    {
        Errno x => x == e,
        int i => i == -(int)e,
        long l => l == -(long)e,
        _ => false,
    };

    private static string Show(object? v) => v switch
    {
        null => "null",
        Errno e => $"{e} ({(int)e})",
        int i when i < 0 && Enum.IsDefined((Errno)(-i)) => $"{i} ({(Errno)(-i)})",
        _ => v.ToString() ?? "?",
    };
}
