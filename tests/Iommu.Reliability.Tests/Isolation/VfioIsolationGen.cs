using CsCheck;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>Generators of the VFIO-level property.</summary>
internal static class VfioIsolationGen
{
    private static readonly Gen<int> s_slot = Gen.Int[0, VfioOp.Slots - 1];
    private static readonly Gen<int> s_guest = Gen.Int[0, VfioOp.Guests - 1];
    private static readonly Gen<int> s_iovaPage = Gen.Int[0, 23];

    public static Gen<VfioOp> Op { get; } = Gen.Frequency(
        (3, s_slot.Select(s => (VfioOp)new MdevCreateOp(s))),
        (1, s_slot.Select(s => (VfioOp)new MdevRemoveOp(s))),
        (4, Gen.Select(s_slot, s_guest, (s, g) => (VfioOp)new JoinOp(s, g))),
        (2, s_slot.Select(s => (VfioOp)new LeaveOp(s))),
        (6, Gen.Select(s_guest, s_iovaPage, Gen.Int[1, 3], Gen.Int[0, VfioOp.BufferPages - 3], Gen.Frequency((3, Gen.Const(true)), (1, Gen.Const(false))))
            .Select((g, i, n, b, w) => (VfioOp)new MapDmaOp(g, i, n, b, w))),
        (4, Gen.Select(s_guest, Gen.Int[0, 15], Gen.Frequency((4, Gen.Const(true)), (1, Gen.Const(false)))).Select((g, k, e) => (VfioOp)new UnmapDmaOp(g, k, e))),
        (14, Gen.Select(s_slot, s_iovaPage, Gen.OneOf(Gen.Const(0), Gen.Const(4088), Gen.Int[1, 511].Select(x => x * 8)), Gen.Bool)
            .Select((s, i, o, w) => (VfioOp)new AdiDmaOp(s, i, o, w))));

    /// <summary>Configuration index (unused: one configuration) and 1–300 ops.</summary>
    public static Gen<(int Config, VfioOp[] Ops)> Sample { get; } = Gen.Select(Gen.Const(0), Op.Array[1, 300]);

    public static string Print((int Config, VfioOp[] Ops) sample) =>
        $"scalable-mode VT-d, SIOV parent with 4 ADIs, 2 guests, {sample.Ops.Length} ops:{Environment.NewLine}"
        + string.Join(Environment.NewLine, sample.Ops.Select((o, i) => $"  {i,3}: {o}"));
}
