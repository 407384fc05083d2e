using System.Reflection;
using Iommu.Reliability.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.BadInput;

/// <summary>
/// Issue 14: after <see cref="Platform.Dispose"/> (or an object's own Dispose) every public entry point
/// throws <see cref="ObjectDisposedException"/> instead of touching freed native memory (an access
/// violation that killed the process) or silently succeeding. A reflection check keeps it complete:
/// every public constructor, method and property of the four libraries has an "after ... Dispose" row,
/// or its type or itself has a reasoned exemption.
/// </summary>
public sealed class AfterDisposeMatrixTests(ITestOutputHelper output)
{
    private static readonly Lazy<IReadOnlyDictionary<string, BadInputRow>> ById = new(() =>
    {
        var d = new Dictionary<string, BadInputRow>(StringComparer.Ordinal);
        foreach (BadInputRow r in AfterDisposeMatrix.Rows())
        {
            string id = r.Id;
            for (int n = 2; !d.TryAdd(id, r); n++)
            {
                id = $"{r.Id} #{n}";
            }
        }

        return d;
    });

    public static TheoryData<string> RowIds()
    {
        var data = new TheoryData<string>();
        foreach (string id in ById.Value.Keys.Order(StringComparer.Ordinal))
        {
            data.Add(id);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(RowIds))]
    public void After_dispose_every_entry_point_throws_ObjectDisposedException(string id)
    {
        BadInputRow row = ById.Value[id];
        using var ctx = new BadInputBed();
        Exception? thrown = null;
        object? result = null;
        try
        {
            result = row.Call(ctx);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            thrown = ex;
        }

        Assert.True(thrown is ObjectDisposedException, $"{id}: expected ObjectDisposedException, {(thrown is null ? $"returned {result ?? "null"}" : $"threw {thrown.GetType().Name}: {thrown.Message}")}");
    }

    [Fact]
    public void Every_public_member_has_an_after_dispose_row_or_a_reasoned_exemption()
    {
        var covered = BadInputMatrix.All.Values.Concat(ById.Value.Values)
            .Where(r => r.Case.Contains("Dispose", StringComparison.Ordinal) && r.Expect is BadInputOutcome.Throws { Exception: var e } && e == typeof(ObjectDisposedException))
            .Select(r => r.Member).ToHashSet(StringComparer.Ordinal);
        var subjects = AfterDisposeMatrix.SubjectTypes.ToHashSet();
        var missing = new List<string>();
        var seenMembers = new HashSet<string>(StringComparer.Ordinal);
        var seenTypes = new HashSet<string>(StringComparer.Ordinal);
        int members = 0;
        foreach (Type t in BadInputMatrixTests.PublicTypes())
        {
            seenTypes.Add(t.Name);
            if (AfterDisposeExemptions.Types.ContainsKey(t.Name))
            {
                continue;
            }

            if (!subjects.Contains(t))
            {
                missing.Add($"{t.Name} (type: neither a subject of AfterDisposeMatrix nor exempt)");
                continue;
            }

            foreach ((string m, MemberInfo _) in AfterDisposeCoverage.Members(t))
            {
                members++;
                seenMembers.Add(m);
                if (!covered.Contains(m) && !AfterDisposeExemptions.Members.ContainsKey(m))
                {
                    missing.Add(m);
                }
            }
        }

        string[] stale = [.. AfterDisposeExemptions.Types.Keys.Where(k => !seenTypes.Contains(k)).Concat(AfterDisposeExemptions.Members.Keys.Where(k => !seenMembers.Contains(k) || covered.Contains(k)))];
        output.WriteLine($"{ById.Value.Count} after-dispose rows over {covered.Count} members; {members} members of {subjects.Count} platform-owned types; {AfterDisposeExemptions.Types.Count} types and {AfterDisposeExemptions.Members.Count} members exempt.");
        Assert.True(missing.Count == 0, "public members with neither an after-dispose row nor an exemption:\n  " + string.Join("\n  ", missing.Distinct()));
        Assert.True(stale.Length == 0, "stale after-dispose exemptions (gone, or now covered by a row): " + string.Join(", ", stale));
    }
}
