namespace Iommu.Reliability.Tests.BadInput;

/// <summary>The bad-input matrix: every row, by library.</summary>
internal static partial class BadInputMatrix
{
    private static readonly Lazy<IReadOnlyDictionary<string, BadInputRow>> ById = new(() =>
    {
        var d = new Dictionary<string, BadInputRow>(StringComparer.Ordinal);
        foreach (BadInputRow r in Core().Concat(Mm()).Concat(VtD()).Concat(Mdev()).Concat(Type1()).Concat(UacceRows()))
        {
            if (!d.TryAdd(r.Id, r))
            {
                throw new InvalidOperationException($"duplicate bad-input row '{r.Id}'");
            }
        }

        return d;
    });

    public static IReadOnlyDictionary<string, BadInputRow> All => ById.Value;
}
