namespace Iommu.VtD.Driver.Format;

/// <summary>A PASID-directory entry (<c>struct pasid_dir_entry</c>): P at bit 0, the PASID table at 63:12.</summary>
[KernelSymbol("struct pasid_dir_entry")]
internal readonly record struct PasidDirEntry(ulong Value)
{
    /// <summary>Bytes in the entry.</summary>
    public const int Size = 8; // sizeof(struct pasid_dir_entry)

    /// <summary>PASID bits 19:6 index the directory (<c>PASID_PDE_SHIFT</c>).</summary>
    [KernelSymbol("PASID_PDE_SHIFT")]
    public const int PdeShift = 6;

    // pasid_pde_is_present tests PASID_PTE_PRESENT (bit 0); the table is PDE_PFN_MASK (PAGE_MASK) of the value.
    private const ulong PresentBit = 1UL << 0;

    /// <summary>The PASID-table bits of the entry, 63:12 (<c>PDE_PFN_MASK</c>, x86's 4 KiB <c>PAGE_MASK</c>).</summary>
    [KernelSymbol("PDE_PFN_MASK")]
    private const ulong PfnMask = ~0xFFFUL;

    /// <summary>Physical address of the directory entry of <paramref name="pasid"/> in the directory at <paramref name="dir"/>.</summary>
    public static ulong Address(ulong dir, uint pasid) => dir + ((ulong)(pasid >> PdeShift) * Size);

    /// <summary>P, bit 0 (<c>pasid_pde_is_present</c>).</summary>
    [KernelSymbol("pasid_pde_is_present")]
    public bool Present => (Value & PresentBit) != 0;

    /// <summary>The PASID table, bits 63:12 (<c>get_pasid_table_from_pde</c>).</summary>
    [KernelSymbol("get_pasid_table_from_pde")]
    public ulong Table => Value & PfnMask;

    /// <summary>A present entry pointing at <paramref name="table"/> (what <c>intel_pasid_get_entry</c> installs).</summary>
    public static PasidDirEntry ForTable(ulong table) => new((table & PfnMask) | PresentBit);
}
