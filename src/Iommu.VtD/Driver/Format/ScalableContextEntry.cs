using Iommu.Memory;

namespace Iommu.VtD.Driver.Format;

/// <summary>
/// A scalable-mode context entry (256 bits; <c>struct context_entry</c> pairs in Linux), with one named
/// accessor per field: q0 = P, FPD, DTE, PASIDE, PRE, PDTS, PASIDDIRPTR; q1 = RID_PASID, RID_PRIV;
/// q2 and q3 are reserved.
/// </summary>
internal struct ScalableContextEntry
{
    /// <summary>PASIDE, q0 bit 3: requests with PASID are translated (<c>CONTEXT_PASIDE</c>).</summary>
    [KernelSymbol("CONTEXT_PASIDE")]
    internal const ulong Paside = 1UL << 3;

    // The scalable-mode helpers of intel-iommu.c; P, FPD and the pointer are the legacy entry's
    // (Linux sets them with the same context_* helpers).
    private const ulong DteBit = 1UL << 2;              // context_set_sm_dte
    private const ulong PreBit = 1UL << 4;              // context_set_sm_pre
    private const int PdtsShift = 9;                    // context_pdts(pds): (pds & 7) << 9
    private const ulong PdtsMask = 7UL << PdtsShift;
    private const ulong RidPasidMask = (1UL << 20) - 1; // context_set_sm_rid2pasid: hi 19:0

    /// <summary>Word 0: P, FPD, DTE, PASIDE, PRE, PDTS, PASIDDIRPTR.</summary>
    public ulong Q0;

    /// <summary>Word 1: RID_PASID, RID_PRIV.</summary>
    public ulong Q1;

    /// <summary>Bytes in the entry.</summary>
    public const int Size = 2 * ContextEntry.Size; // two struct context_entry (iommu_context_addr doubles devfn)

    /// <summary>P, q0 bit 0 (<c>context_present</c>).</summary>
    public readonly bool Present => (Q0 & ContextEntry.PresentBit) != 0;

    /// <summary>PASIDE, q0 bit 3: requests with PASID are translated (<c>CONTEXT_PASIDE</c>).</summary>
    public readonly bool PasidEnabled => (Q0 & Paside) != 0;

    /// <summary>RID_PASID, q1 19:0.</summary>
    public readonly uint RidPasid => (uint)(Q1 & RidPasidMask);

    /// <summary>Reads the first two words of the entry at <paramref name="pa"/> (q2 and q3 are reserved).</summary>
    public static ScalableContextEntry Load(PhysicalMemory memory, ulong pa) => new() { Q0 = memory.ReadUInt64(pa), Q1 = memory.ReadUInt64(pa + 8) };

    /// <summary>PDTS such that the directory has <paramref name="maxPasid"/> >> 6 entries (<c>context_get_sm_pds</c>).</summary>
    [KernelSymbol("context_get_sm_pds")]
    public static int Pds(uint maxPasid)
    {
        uint maxPde = maxPasid >> PasidDirEntry.PdeShift;
        int pds = System.Numerics.BitOperations.TrailingZeroCount(maxPde);
        return pds < 7 ? 0 : pds - 7;
    }

    /// <summary>Sets P (<c>context_set_present</c>).</summary>
    public void SetPresent() => Q0 |= ContextEntry.PresentBit;

    /// <summary>Clears FPD, q0 bit 1 (<c>context_set_fault_enable</c>).</summary>
    public void SetFaultEnable() => Q0 &= ~ContextEntry.FpdBit;

    /// <summary>PASIDDIRPTR, q0 63:12 (<c>context_set_address_root</c> on a scalable entry).</summary>
    public void SetPasidDirectory(ulong dir) => Q0 = (Q0 & ~DmaPte.PageMask) | (dir & DmaPte.PageMask);

    /// <summary>PDTS, q0 11:9: the directory holds 2^(PDTS+7) entries (<c>context_pdts</c>).</summary>
    [KernelSymbol("context_pdts")]
    public void SetPdts(int pds) => Q0 = (Q0 & ~PdtsMask) | (((ulong)pds << PdtsShift) & PdtsMask);

    /// <summary>Sets PASIDE, q0 bit 3 (<c>CONTEXT_PASIDE</c>).</summary>
    public void SetPasidEnable() => Q0 |= Paside;

    /// <summary>DTE, q0 bit 2 (<c>context_set_sm_dte</c>).</summary>
    [KernelSymbol("context_set_sm_dte")]
    public void SetDeviceTlbEnable() => Q0 |= DteBit;

    /// <summary>PRE, q0 bit 4 (<c>context_set_sm_pre</c>).</summary>
    [KernelSymbol("context_set_sm_pre")]
    public void SetPageRequestEnable() => Q0 |= PreBit;

    /// <summary>RID_PASID, q1 19:0 (<c>context_set_sm_rid2pasid</c>).</summary>
    [KernelSymbol("context_set_sm_rid2pasid")]
    public void SetRidPasid(uint pasid) => Q1 = (Q1 & ~RidPasidMask) | (pasid & RidPasidMask);

    /// <summary>Writes the entry to <paramref name="pa"/>: q1–q3 first, q0 (with P) last.</summary>
    public readonly void Store(PhysicalMemory memory, ulong pa)
    {
        memory.WriteUInt64(pa + 8, Q1);
        memory.WriteUInt64(pa + 16, 0);
        memory.WriteUInt64(pa + 24, 0);
        memory.WriteUInt64(pa, Q0);
    }

    /// <summary>Rewrites only q0 at <paramref name="pa"/> (a PASIDE change on a present entry).</summary>
    public readonly void StoreQ0(PhysicalMemory memory, ulong pa) => memory.WriteUInt64(pa, Q0);

    /// <summary>Zeroes the entry at <paramref name="pa"/> (<c>context_clear_entry</c> on both halves).</summary>
    public static void Clear(PhysicalMemory memory, ulong pa)
    {
        for (ulong q = 0; q < Size; q += 8)
        {
            memory.WriteUInt64(pa + q, 0);
        }
    }
}
