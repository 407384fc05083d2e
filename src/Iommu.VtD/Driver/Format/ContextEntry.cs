using Iommu.Memory;

namespace Iommu.VtD.Driver.Format;

/// <summary>
/// A legacy-mode context entry (<c>struct context_entry</c>, 128 bits), with one named accessor per
/// field as in <c>intel-iommu.c</c>: lo = P, FPD, TT, SLPTPTR; hi = AW, DID.
/// </summary>
[KernelSymbol("struct context_entry")]
internal struct ContextEntry
{
    /// <summary>TT = 00: untranslated requests walk the second level (<c>CONTEXT_TT_MULTI_LEVEL</c>).</summary>
    [KernelSymbol("CONTEXT_TT_MULTI_LEVEL")]
    public const int TtMultiLevel = 0;

    /// <summary>TT = 01: untranslated requests walk the second level and translation requests are answered (<c>CONTEXT_TT_DEV_IOTLB</c>).</summary>
    [KernelSymbol("CONTEXT_TT_DEV_IOTLB")]
    public const int TtDevIotlb = 1;

    /// <summary>TT = 10: pass-through (<c>CONTEXT_TT_PASS_THROUGH</c>).</summary>
    [KernelSymbol("CONTEXT_TT_PASS_THROUGH")]
    public const int TtPassThrough = 2;

    // The bits of intel-iommu.c's context_* helpers, which scalable-mode entries share (lo P, FPD, pointer).

    /// <summary>P, lo bit 0 (<c>context_set_present</c>: <c>lo |= 1</c>).</summary>
    internal const ulong PresentBit = 1UL << 0;

    /// <summary>FPD, lo bit 1 (<c>context_set_fault_enable</c> clears it).</summary>
    internal const ulong FpdBit = 1UL << 1;

    private const int TtShift = 2;                      // context_set_translation_type: (value & 3) << 2
    private const ulong TtMask = 3UL << TtShift;
    private const ulong AwMask = 7;                     // context_set_address_width: value & 7
    private const int DidShift = 8;                     // context_set_domain_id, context_domain_id: hi 23:8
    private const ulong DidMask = 0xFFFFUL << DidShift;

    /// <summary>Low word: P, FPD, TT, SLPTPTR.</summary>
    public ulong Lo;

    /// <summary>High word: AW, DID.</summary>
    public ulong Hi;

    /// <summary>Bytes in the entry.</summary>
    public const int Size = 16; // sizeof(struct context_entry)

    /// <summary>P, lo bit 0 (<c>context_present</c>).</summary>
    [KernelSymbol("context_present")]
    public readonly bool Present => (Lo & PresentBit) != 0;

    /// <summary>DID, hi 23:8 (<c>context_domain_id</c>).</summary>
    [KernelSymbol("context_domain_id")]
    public readonly ushort DomainId => (ushort)((Hi & DidMask) >> DidShift);

    /// <summary>Reads the entry at <paramref name="pa"/>.</summary>
    public static ContextEntry Load(PhysicalMemory memory, ulong pa) => new() { Lo = memory.ReadUInt64(pa), Hi = memory.ReadUInt64(pa + 8) };

    /// <summary>Sets P (<c>context_set_present</c>).</summary>
    [KernelSymbol("context_set_present")]
    public void SetPresent() => Lo |= PresentBit;

    /// <summary>Clears FPD, lo bit 1: faults are recorded (<c>context_set_fault_enable</c>).</summary>
    [KernelSymbol("context_set_fault_enable")]
    public void SetFaultEnable() => Lo &= ~FpdBit;

    /// <summary>TT, lo 3:2 (<c>context_set_translation_type</c>).</summary>
    [KernelSymbol("context_set_translation_type")]
    public void SetTranslationType(int tt) => Lo = (Lo & ~TtMask) | (((ulong)tt << TtShift) & TtMask);

    /// <summary>SLPTPTR, lo 63:12 (<c>context_set_address_root</c>).</summary>
    [KernelSymbol("context_set_address_root")]
    public void SetAddressRoot(ulong table) => Lo = (Lo & ~DmaPte.PageMask) | (table & DmaPte.PageMask);

    /// <summary>AW, hi 2:0: the AGAW (<c>context_set_address_width</c>).</summary>
    [KernelSymbol("context_set_address_width")]
    public void SetAddressWidth(int agaw) => Hi = (Hi & ~AwMask) | ((ulong)agaw & AwMask);

    /// <summary>DID, hi 23:8 (<c>context_set_domain_id</c>).</summary>
    [KernelSymbol("context_set_domain_id")]
    public void SetDomainId(ushort did) => Hi = (Hi & ~DidMask) | ((ulong)did << DidShift);

    /// <summary>Writes the entry to <paramref name="pa"/>: hi first, lo (with P) last, so the unit never sees P with a stale hi.</summary>
    public readonly void Store(PhysicalMemory memory, ulong pa)
    {
        memory.WriteUInt64(pa + 8, Hi);
        memory.WriteUInt64(pa, Lo);
    }

    /// <summary>Zeroes the entry at <paramref name="pa"/> (<c>context_clear_entry</c>).</summary>
    [KernelSymbol("context_clear_entry")]
    public static void Clear(PhysicalMemory memory, ulong pa)
    {
        memory.WriteUInt64(pa, 0);
        memory.WriteUInt64(pa + 8, 0);
    }
}
