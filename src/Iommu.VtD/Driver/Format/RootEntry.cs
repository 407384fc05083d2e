namespace Iommu.VtD.Driver.Format;

/// <summary>
/// One 64-bit half of a root entry (<c>struct root_entry</c>): the whole legacy entry's low word, or in
/// scalable mode the lower (LCTP, devfn 0–127) or upper (UCTP, devfn 128–255) context-table pointer.
/// Both halves have the present bit at 0 and the pointer at 63:12, so one type serves all three.
/// </summary>
[KernelSymbol("struct root_entry")]
internal readonly record struct RootEntry(ulong Value)
{
    /// <summary>Bytes in a root entry, both halves (<c>sizeof(struct root_entry)</c>).</summary>
    public const int Size = 16;

    // P (lo) and UP (hi): iommu_context_addr and root_entry_lctp/uctp test bit 0.
    private const ulong PresentBit = 1UL << 0;

    /// <summary>Physical address of the half of the root entry of <paramref name="bus"/> that points at <paramref name="devfn"/>'s context table.</summary>
    public static ulong Address(ulong rootTable, byte bus, byte devfn, bool scalable) =>
        rootTable + ((ulong)bus * Size) + (scalable && devfn >= 0x80 ? 8UL : 0);

    /// <summary>Physical address of half <paramref name="half"/> (0 = lo, 1 = hi) of the root entry of <paramref name="bus"/>.</summary>
    public static ulong HalfAddress(ulong rootTable, int bus, int half) =>
        rootTable + ((ulong)bus * Size) + ((ulong)half * 8);

    /// <summary>P (lo) or UP (hi), bit 0 (the <c>*entry &amp; 1</c> test of <c>iommu_context_addr</c>).</summary>
    [KernelSymbol("iommu_context_addr")]
    public bool Present => (Value & PresentBit) != 0;

    /// <summary>The context table, bits 63:12 (<c>root_entry_lctp</c>, <c>root_entry_uctp</c>, which also test P).</summary>
    [KernelSymbol("root_entry_lctp")]
    [KernelSymbol("root_entry_uctp")]
    public ulong ContextTable => Value & DmaPte.PageMask;

    /// <summary>A present half pointing at <paramref name="table"/> (<c>*entry = phy_addr | 1</c> in <c>iommu_context_addr</c>).</summary>
    [KernelSymbol("iommu_context_addr")]
    public static RootEntry ForContextTable(ulong table) => new((table & DmaPte.PageMask) | PresentBit);
}
