using System.Runtime.CompilerServices;
using Iommu.Memory;

namespace Iommu.VtD.Driver.Format;

/// <summary>
/// A scalable-mode PASID-table entry (<c>struct pasid_entry</c>, 512 bits as eight words), with one
/// named setter per field and its bit, as in Linux's <c>intel/pasid.c</c>. Built in a local and
/// written with <see cref="Store"/>, which puts q0 (and its P bit) last.
/// </summary>
/// <remarks>
/// The first-level fields (FLPTR, FLPM, WPE, EAFE) are here for first-level translation; nothing sets
/// them yet. Every bit is written here, as <c>pasid.h</c> and <c>pasid.c</c> write it; the hardware model
/// decodes the entry with its own constants, so the two readings meet only in the tests.
/// </remarks>
[KernelSymbol("struct pasid_entry")]
internal struct PasidEntry
{
    /// <summary>Bytes in the entry.</summary>
    public const int Size = 64; // sizeof(struct pasid_entry): u64 val[8]

    /// <summary>PASID bits 5:0 index the PASID table (<c>PASID_PTE_MASK</c>).</summary>
    [KernelSymbol("PASID_PTE_MASK")]
    public const uint PteMask = 0x3F;

    /// <summary>P, q0 bit 0 (<c>PASID_PTE_PRESENT</c>).</summary>
    [KernelSymbol("PASID_PTE_PRESENT")]
    private const ulong PresentBit = 1UL << 0;

    /// <summary>FPD, q0 bit 1 (<c>PASID_PTE_FPD</c>).</summary>
    [KernelSymbol("PASID_PTE_FPD")]
    private const ulong FpdBit = 1UL << 1;

    private const int AwShift = 2;                     // pasid_set_address_width: GENMASK_ULL(4, 2), value << 2
    private const ulong AwMask = 7UL << AwShift;
    private const int PgttShift = 6;                   // pasid_set_translation_type: GENMASK_ULL(8, 6), value << 6
    private const ulong PgttMask = 7UL << PgttShift;
    private const ulong DidMask = 0xFFFF;              // pasid_set_domain_id: q1 GENMASK_ULL(15, 0)
    private const ulong PwsnpBit = 1UL << 23;          // q1 bit 23 (abs. 87)
    private const ulong PgsnpBit = 1UL << 24;          // q1 bit 24 (abs. 88)
    private const ulong SreBit = 1UL << 0;             // q2 bit 0 (abs. 128)
    private const int FlpmShift = 2;                   // q2 3:2 (abs. 131:130)
    private const ulong FlpmMask = 3UL << FlpmShift;
    private const ulong WpeBit = 1UL << 4;             // q2 bit 4 (abs. 132)
    private const ulong EafeBit = 1UL << 7;            // q2 bit 7 (abs. 135)

    private Words _q;

    /// <summary>Word <paramref name="i"/> (0–7) of the entry.</summary>
    public readonly ulong this[int i] => _q[i];

    /// <summary>P, q0 bit 0 (<c>pasid_pte_is_present</c>).</summary>
    [KernelSymbol("pasid_pte_is_present")]
    public readonly bool Present => (_q[0] & PresentBit) != 0;

    /// <summary>PGTT, q0 8:6 (<c>pasid_pte_get_pgtt</c>).</summary>
    [KernelSymbol("pasid_pte_get_pgtt")]
    public readonly PasidPgtt Pgtt => (PasidPgtt)((_q[0] & PgttMask) >> PgttShift);

    /// <summary>DID, q1 15:0 (<c>pasid_get_domain_id</c>).</summary>
    [KernelSymbol("pasid_get_domain_id")]
    public readonly ushort DomainId => (ushort)(_q[1] & DidMask);

    /// <summary>Physical address of <paramref name="pasid"/>'s entry in the PASID table at <paramref name="table"/>.</summary>
    public static ulong Address(ulong table, uint pasid) => table + ((pasid & PteMask) * Size);

    /// <summary>Reads the first three words of the entry at <paramref name="pa"/> (all the driver ever sets).</summary>
    public static PasidEntry Load(PhysicalMemory memory, ulong pa)
    {
        var e = default(PasidEntry);
        e._q[0] = memory.ReadUInt64(pa);
        e._q[1] = memory.ReadUInt64(pa + 8);
        e._q[2] = memory.ReadUInt64(pa + 16);
        return e;
    }

    /// <summary>Reads only q0 of the entry at <paramref name="pa"/> (P and PGTT).</summary>
    public static PasidEntry LoadQ0(PhysicalMemory memory, ulong pa)
    {
        var e = default(PasidEntry);
        e._q[0] = memory.ReadUInt64(pa);
        return e;
    }

    /// <summary>Sets P, q0 bit 0 (<c>pasid_set_present</c>).</summary>
    [KernelSymbol("pasid_set_present")]
    public void SetPresent() => _q[0] |= PresentBit;

    /// <summary>Clears FPD, q0 bit 1: faults are recorded (<c>pasid_set_fault_enable</c>).</summary>
    [KernelSymbol("pasid_set_fault_enable")]
    public void SetFaultEnable() => _q[0] &= ~FpdBit;

    /// <summary>AW, q0 4:2: the AGAW of the second-level walk (<c>pasid_set_address_width</c>).</summary>
    [KernelSymbol("pasid_set_address_width")]
    public void SetAddressWidth(int agaw) => _q[0] = (_q[0] & ~AwMask) | (((ulong)agaw << AwShift) & AwMask);

    /// <summary>PGTT, q0 8:6 (<c>pasid_set_translation_type</c>).</summary>
    [KernelSymbol("pasid_set_translation_type")]
    public void SetTranslationType(PasidPgtt pgtt) => _q[0] = (_q[0] & ~PgttMask) | (((ulong)pgtt << PgttShift) & PgttMask);

    /// <summary>SLPTPTR, q0 63:12 (<c>pasid_set_slptr</c>).</summary>
    [KernelSymbol("pasid_set_slptr")]
    public void SetSlptr(ulong table) => _q[0] = (_q[0] & ~DmaPte.PageMask) | (table & DmaPte.PageMask);

    /// <summary>DID, q1 15:0 (<c>pasid_set_domain_id</c>).</summary>
    [KernelSymbol("pasid_set_domain_id")]
    public void SetDomainId(ushort did) => _q[1] = (_q[1] & ~DidMask) | did;

    /// <summary>PWSNP, q1 bit 23: snooped page walks, set from ECAP.SMPWCS (<c>pasid_set_page_snoop</c>).</summary>
    [KernelSymbol("pasid_set_page_snoop")]
    public void SetPageWalkSnoop(bool value) => _q[1] = value ? _q[1] | PwsnpBit : _q[1] & ~PwsnpBit;

    /// <summary>PGSNP, q1 bit 24: every access snoops (<c>pasid_set_pgsnp</c>).</summary>
    [KernelSymbol("pasid_set_pgsnp")]
    public void SetPageSnoop() => _q[1] |= PgsnpBit;

    /// <summary>SRE, q2 bit 0: supervisor requests allowed (<c>pasid_set_sre</c>).</summary>
    [KernelSymbol("pasid_set_sre")]
    public void SetSre() => _q[2] |= SreBit;

    /// <summary>FLPTR, q2 63:12: the first-level table (<c>pasid_set_flptr</c>). Unused until first-level translation.</summary>
    [KernelSymbol("pasid_set_flptr")]
    public void SetFlptr(ulong table) => _q[2] = (_q[2] & ~DmaPte.PageMask) | (table & DmaPte.PageMask);

    /// <summary>FLPM, q2 3:2: 0 = 4-level, 1 = 5-level first level (<c>pasid_set_flpm</c>). Unused until first-level translation.</summary>
    [KernelSymbol("pasid_set_flpm")]
    public void SetFlpm(int mode) => _q[2] = (_q[2] & ~FlpmMask) | (((ulong)mode << FlpmShift) & FlpmMask);

    /// <summary>WPE, q2 bit 4: supervisor writes honour R/W (<c>pasid_set_wpe</c>). Unused until first-level translation.</summary>
    [KernelSymbol("pasid_set_wpe")]
    public void SetWpe() => _q[2] |= WpeBit;

    /// <summary>EAFE, q2 bit 7: extended-accessed flag (<c>pasid_set_eafe</c>). Unused until first-level translation.</summary>
    [KernelSymbol("pasid_set_eafe")]
    public void SetEafe() => _q[2] |= EafeBit;

    /// <summary>Writes the entry to <paramref name="pa"/>: q1–q7 first, q0 (with P) last, so the unit never sees P over stale words.</summary>
    public readonly void Store(PhysicalMemory memory, ulong pa)
    {
        for (int i = 1; i < 8; i++)
        {
            memory.WriteUInt64(pa + ((ulong)i * 8), _q[i]);
        }

        memory.WriteUInt64(pa, _q[0]);
    }

    /// <summary>Zeroes the entry at <paramref name="pa"/> (<c>pasid_clear_entry</c>), q0 (and P) first.</summary>
    [KernelSymbol("pasid_clear_entry")]
    public static void Clear(PhysicalMemory memory, ulong pa)
    {
        for (ulong q = 0; q < Size; q += 8)
        {
            memory.WriteUInt64(pa + q, 0);
        }
    }

    /// <summary>
    /// Clears the entry at <paramref name="pa"/> but keeps faults on its PASID suppressed
    /// (<c>pasid_clear_entry_with_fpd</c>): q0 = FPD (P = 0) first, then q1–q7 zeroed.
    /// </summary>
    [KernelSymbol("pasid_clear_entry_with_fpd")]
    public static void ClearWithFpd(PhysicalMemory memory, ulong pa)
    {
        memory.WriteUInt64(pa, FpdBit);
        for (ulong q = 8; q < Size; q += 8)
        {
            memory.WriteUInt64(pa + q, 0);
        }
    }

    [InlineArray(8)]
    private struct Words
    {
        private ulong _w0;
    }
}
