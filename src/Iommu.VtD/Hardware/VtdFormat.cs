namespace Iommu.VtD.Hardware;

/// <summary>
/// Bit layouts of the in-memory structures the remapping unit reads: root entries, context entries
/// (legacy 128-bit and scalable 256-bit), PASID-directory and PASID-table entries, second-level
/// paging entries and invalidation descriptors. Multi-word structures are little-endian arrays of
/// 64-bit words q0, q1, …; each constant names the word it applies to.
/// </summary>
/// <remarks>
/// Bit positions, masks, field values and sizes only, as the hardware model reads them (with the CAP and
/// ECAP bit positions of <see cref="VtdCap"/> and <see cref="VtdEcap"/>); emulators and tests use them too.
/// The driver does not: it keeps its own copy of every bit in its typed entries (<c>Driver/Format</c>:
/// root, context, PASID directory and PASID entries, invalidation descriptors, fault records,
/// <c>cap_*</c>/<c>ecap_*</c>), written as Linux writes them, so a misread bit is not shared by both
/// sides. The two readings of the specification meet only in the tests: the driver builds tables that
/// the unit walks, an independent walker in the tests reads the same bytes, and the capability decoder
/// tests hold the driver's <c>cap_*</c>/<c>ecap_*</c> to the kernel's macros.
/// </remarks>
public static class VtdFormat
{
    /// <summary>Bytes in a legacy or scalable root entry (128 bits).</summary>
    public const int RootEntrySize = 16;

    /// <summary>Bytes in a legacy context entry (128 bits).</summary>
    public const int LegacyContextEntrySize = 16;

    /// <summary>Bytes in a scalable-mode context entry (256 bits).</summary>
    public const int ScalableContextEntrySize = 32;

    /// <summary>Bytes in a PASID-directory entry.</summary>
    public const int PasidDirectoryEntrySize = 8;

    /// <summary>Bytes in a PASID-table entry (512 bits).</summary>
    public const int PasidEntrySize = 64;

    /// <summary>Present bit (bit 0) of root (lower half), context, PASID-directory and PASID entries.</summary>
    public const ulong Present = 1UL << 0;

    /// <summary>Fault-processing disable (bit 1) of context, PASID-directory and PASID entries.</summary>
    public const ulong Fpd = 1UL << 1;

    /// <summary>Table-pointer bits 63:12 (before host-address-width checks).</summary>
    public const ulong PointerMask = ~0xFFFUL;

    // Root entry.

    /// <summary>Root q0 reserved bits 11:1 (legacy, and the lower half of a scalable root entry).</summary>
    public const ulong RootReservedLow = 0xFFE;

    /// <summary>Scalable root q1 bit 0: UP, upper context table present (devfn 128–255).</summary>
    public const ulong RootUpperPresent = 1UL << 0;

    // Legacy context entry.

    /// <summary>Legacy context q0 shift of TT, translation type (3:2).</summary>
    public const int ContextTtShift = 2;

    /// <summary>TT = 00: untranslated requests, second-level walk.</summary>
    public const int TtTranslated = 0;

    /// <summary>TT = 01: as 00, plus device-TLB (ATS) requests.</summary>
    public const int TtTranslatedWithDeviceTlb = 1;

    /// <summary>TT = 10: pass-through.</summary>
    public const int TtPassThrough = 2;

    /// <summary>Legacy context q0 reserved bits 11:4.</summary>
    public const ulong ContextReservedLow = 0xFF0;

    /// <summary>Legacy context q1 AW mask (2:0): 1 = 39-bit, 2 = 48-bit, 3 = 57-bit.</summary>
    public const ulong ContextAwMask = 0x7;

    /// <summary>Legacy context q1 shift of DID (87:72 → q1 23:8).</summary>
    public const int ContextDidShift = 8;

    /// <summary>Legacy context q1 reserved bits (bit 71 and 127:88).</summary>
    public const ulong ContextReservedHigh = 0xFFFF_FFFF_FF00_0080;

    // Scalable-mode context entry.

    /// <summary>Scalable context q0 bit 2: DTE, device-TLB enable.</summary>
    public const ulong ScalableContextDte = 1UL << 2;

    /// <summary>Scalable context q0 bit 3: PASIDE, requests-with-PASID enable.</summary>
    public const ulong ScalableContextPaside = 1UL << 3;

    /// <summary>Scalable context q0 bit 4: PRE, page-request enable.</summary>
    public const ulong ScalableContextPre = 1UL << 4;

    /// <summary>Scalable context q0 reserved bits 8:5.</summary>
    public const ulong ScalableContextReservedLow = 0x1E0;

    /// <summary>Scalable context q0 shift of PDTS (11:9): the PASID directory holds 2^(PDTS+7) entries.</summary>
    public const int ScalableContextPdtsShift = 9;

    /// <summary>Scalable context q1 RID_PASID mask (83:64 → q1 19:0).</summary>
    public const ulong ScalableContextRidPasidMask = 0xF_FFFF;

    /// <summary>Scalable context q1 bit 20 (abs. 84): RID_PRIV.</summary>
    public const ulong ScalableContextRidPriv = 1UL << 20;

    /// <summary>Scalable context q1 reserved bits 127:85.</summary>
    public const ulong ScalableContextReservedHigh = 0xFFFF_FFFF_FFE0_0000;

    // PASID directory / table.

    /// <summary>PASID-directory entry reserved bits 11:2.</summary>
    public const ulong PasidDirectoryReserved = 0xFFC;

    /// <summary>Shift from a PASID to its directory index (PASID 19:6).</summary>
    public const int PasidDirectoryShift = 6;

    /// <summary>Mask of a PASID's index inside its PASID table (PASID 5:0).</summary>
    public const uint PasidTableIndexMask = 0x3F;

    /// <summary>PASID q0 shift of AW (4:2).</summary>
    public const int PasidAwShift = 2;

    /// <summary>PASID q0 bit 5: SLEE.</summary>
    public const ulong PasidSlee = 1UL << 5;

    /// <summary>PASID q0 shift of PGTT (8:6).</summary>
    public const int PasidPgttShift = 6;

    /// <summary>PASID q0 bit 9: SLADE.</summary>
    public const ulong PasidSlade = 1UL << 9;

    /// <summary>PASID q0 reserved bits 11:10.</summary>
    public const ulong PasidReservedQ0 = 0xC00;

    /// <summary>PASID q1 mask of DID (15:0).</summary>
    public const ulong PasidDidMask = 0xFFFF;

    /// <summary>PASID q1 reserved bits 22:16.</summary>
    public const ulong PasidReservedQ1 = 0x7F_0000;

    /// <summary>PASID q2 reserved bits 11:8.</summary>
    public const ulong PasidReservedQ2 = 0xF00;

    /// <summary>PASID q2 bit 0: SRE, supervisor requests enable.</summary>
    public const ulong PasidSre = 1UL << 0;

    /// <summary>PASID q2 bit 1: ERE, execute requests enable.</summary>
    public const ulong PasidEre = 1UL << 1;

    /// <summary>PASID q2 shift of FLPM (3:2): 00 4-level, 01 5-level first-level paging.</summary>
    public const int PasidFlpmShift = 2;

    /// <summary>PASID q2 bit 4: WPE, write-protect enable (supervisor writes honour R/W).</summary>
    public const ulong PasidWpe = 1UL << 4;

    /// <summary>PASID q2 bit 5: NXE, no-execute enable (XD honoured).</summary>
    public const ulong PasidNxe = 1UL << 5;

    /// <summary>PASID q2 bit 6: SMEP, supervisor-mode execute prevention.</summary>
    public const ulong PasidSmep = 1UL << 6;

    /// <summary>PASID q2 bit 7: EAFE, extended-accessed flag enable.</summary>
    public const ulong PasidEafe = 1UL << 7;

    /// <summary>PGTT = 001: first-level only.</summary>
    public const int PgttFirstLevel = 1;

    /// <summary>PGTT = 010: second-level only.</summary>
    public const int PgttSecondLevel = 2;

    /// <summary>PGTT = 011: nested.</summary>
    public const int PgttNested = 3;

    /// <summary>PGTT = 100: pass-through.</summary>
    public const int PgttPassThrough = 4;

    // Second-level paging entries.

    /// <summary>Second-level entry R (bit 0).</summary>
    public const ulong SlRead = 1UL << 0;

    /// <summary>Second-level entry W (bit 1).</summary>
    public const ulong SlWrite = 1UL << 1;

    /// <summary>Second-level entry X (bit 2).</summary>
    public const ulong SlExecute = 1UL << 2;

    /// <summary>Second-level entry PS (bit 7): a 2 MiB (level 2) or 1 GiB (level 3) leaf.</summary>
    public const ulong SlPageSize = 1UL << 7;

    /// <summary>Second-level entry A (bit 8).</summary>
    public const ulong SlAccessed = 1UL << 8;

    /// <summary>Second-level entry D (bit 9).</summary>
    public const ulong SlDirty = 1UL << 9;

    /// <summary>Second-level leaf SNP (bit 11); reserved unless ECAP.SC, and always reserved in non-leaf entries.</summary>
    public const ulong SlSnoop = 1UL << 11;

    /// <summary>Second-level bit 62, reserved in every entry (TM in old specifications).</summary>
    public const ulong SlReserved62 = 1UL << 62;

    /// <summary>Second-level address field 51:12 (before host-address-width checks).</summary>
    public const ulong SlAddressMask = 0x000F_FFFF_FFFF_F000;

    // First-level (IA-32e) paging entries.

    /// <summary>First-level entry P (bit 0).</summary>
    public const ulong FlPresent = 1UL << 0;

    /// <summary>First-level entry R/W (bit 1).</summary>
    public const ulong FlReadWrite = 1UL << 1;

    /// <summary>First-level entry U/S (bit 2).</summary>
    public const ulong FlUser = 1UL << 2;

    /// <summary>First-level entry PWT (bit 3): page write-through; the unit's walk ignores it (decoded by the diagnostics).</summary>
    public const ulong FlWriteThrough = 1UL << 3;

    /// <summary>First-level entry PCD (bit 4): page cache disable; the unit's walk ignores it (decoded by the diagnostics).</summary>
    public const ulong FlCacheDisable = 1UL << 4;

    /// <summary>First-level entry A (bit 5).</summary>
    public const ulong FlAccessed = 1UL << 5;

    /// <summary>First-level entry D (bit 6), in leaves.</summary>
    public const ulong FlDirty = 1UL << 6;

    /// <summary>First-level entry PS (bit 7): a 2 MiB (PDE) or 1 GiB (PDPE) leaf; reserved in PML4E/PML5E.</summary>
    public const ulong FlPageSize = 1UL << 7;

    /// <summary>First-level entry EA (bit 10): extended accessed, set with PASID-entry EAFE.</summary>
    public const ulong FlExtendedAccessed = 1UL << 10;

    /// <summary>First-level entry XD (bit 63): execute disable, honoured with PASID-entry NXE.</summary>
    public const ulong FlExecuteDisable = 1UL << 63;

    /// <summary>First-level address field 51:12 (before host-address-width checks).</summary>
    public const ulong FlAddressMask = 0x000F_FFFF_FFFF_F000;

    /// <summary>Entries in a paging-structure page.</summary>
    public const int EntriesPerTable = 512;

    /// <summary>Address bits one paging level translates.</summary>
    public const int LevelStride = 9;

    // Invalidation descriptors (q0 type = q0[3:0] | q0[11:9] << 4).

    /// <summary>Descriptor type 1: context-cache invalidate.</summary>
    public const int DescContextCache = 1;

    /// <summary>Descriptor type 2: IOTLB invalidate.</summary>
    public const int DescIotlb = 2;

    /// <summary>Descriptor type 3: device-TLB invalidate.</summary>
    public const int DescDeviceTlb = 3;

    /// <summary>Descriptor type 4: interrupt-entry-cache invalidate.</summary>
    public const int DescInterruptEntryCache = 4;

    /// <summary>Descriptor type 5: invalidation wait.</summary>
    public const int DescWait = 5;

    /// <summary>Descriptor type 6: PASID-based IOTLB invalidate.</summary>
    public const int DescPasidIotlb = 6;

    /// <summary>Descriptor type 7: PASID-cache invalidate.</summary>
    public const int DescPasidCache = 7;

    /// <summary>Descriptor type 8: PASID-based device-TLB invalidate.</summary>
    public const int DescPasidDeviceTlb = 8;

    /// <summary>Shift of the granularity field G (5:4) in q0 of descriptor types 1, 2, 6, 7.</summary>
    public const int DescGranularityShift = 4;

    /// <summary>Shift of DID (31:16) in q0 of descriptor types 1, 2, 6, 7.</summary>
    public const int DescDidShift = 16;

    /// <summary>Shift of SID (47:32) in q0 of the context-cache descriptor.</summary>
    public const int DescSidShift = 32;

    /// <summary>Shift of FM (49:48) in q0 of the context-cache descriptor.</summary>
    public const int DescFmShift = 48;

    /// <summary>Shift of PASID (51:32) in q0 of descriptor types 6 and 7.</summary>
    public const int DescPasidShift = 32;

    /// <summary>Wait descriptor q0 bit 4: IF, raise the invalidation-completion interrupt.</summary>
    public const ulong DescWaitIf = 1UL << 4;

    /// <summary>Wait descriptor q0 bit 5: SW, write STDATA to STADDR.</summary>
    public const ulong DescWaitSw = 1UL << 5;

    /// <summary>Wait descriptor q0 bit 6: FN, fence.</summary>
    public const ulong DescWaitFn = 1UL << 6;

    /// <summary>Wait descriptor q0 bit 7: PD, page-request drain.</summary>
    public const ulong DescWaitPd = 1UL << 7;

    /// <summary>Shift of STDATA (63:32) in q0 of the wait descriptor.</summary>
    public const int DescWaitDataShift = 32;

    /// <summary>Descriptor type 9: page group response.</summary>
    public const int DescPageGroupResponse = 9;

    /// <summary>Device-TLB invalidate (type 3) q1: S, the size bit.</summary>
    internal const ulong DevTlbSize = 1UL;

    /// <summary>PASID-based device-TLB invalidate (type 8) q1: S, the size bit (bit 0 is G, all PASIDs).</summary>
    internal const ulong PasidDevTlbSize = 1UL << 11;

    /// <summary>
    /// The range a device-TLB invalidate names: S = 0 one 4 KiB page at ADDR; S = 1 the lowest clear address bit
    /// at or above 12 gives the size (bit 12 clear → 8 KiB, bit 13 → 16 KiB, …), the range aligned down to it;
    /// no clear bit below 63: the whole space, returned as size <see cref="ulong.MaxValue"/> at address 0.
    /// </summary>
    internal static (ulong Address, ulong Size) DeviceTlbRange(ulong q1, ulong sizeBit)
    {
        ulong addr = q1 & PointerMask;
        if ((q1 & sizeBit) == 0)
        {
            return (addr, 4096);
        }

        ulong ones = ~addr & ~0xFFFUL;
        int k = System.Numerics.BitOperations.TrailingZeroCount(ones);
        if (ones == 0 || k >= 63)
        {
            // Bits 62:12 all set: the size is 2^64, the whole space, whatever bit 63 says.
            return (0, ulong.MaxValue);
        }

        ulong size = 1UL << (k + 1);
        return (addr & ~(size - 1), size);
    }

    /// <summary>Page group response q0: PASID present (the PASID in 51:32 is valid).</summary>
    public const ulong PgrPasidPresent = 1UL << 4;

    /// <summary>Page group response q0: response code in 15:12 (0 Success, 1 Invalid Request, 0xF Response Failure).</summary>
    public const int PgrCodeShift = 12;

    // Page request descriptors (written by the unit at PQA + PQT; 32 bytes, q2/q3 private data).

    /// <summary>Page request descriptor q0 type field (1: page request).</summary>
    public const ulong PrqDescType = 1;

    /// <summary>Page request q0: PASID present (PP).</summary>
    public const ulong PrqPasidPresent = 1UL << 8;

    /// <summary>Page request q0: requester id in 31:16.</summary>
    public const int PrqRidShift = 16;

    /// <summary>Page request q0: PASID in 51:32 (also the page group response's).</summary>
    public const int PrqPasidShift = 32;

    /// <summary>Page request q0: execute requested (ER).</summary>
    public const ulong PrqExecute = 1UL << 52;

    /// <summary>Page request q0: privileged mode requested (PM).</summary>
    public const ulong PrqPrivileged = 1UL << 53;

    /// <summary>Page request q1: read requested (RD).</summary>
    public const ulong PrqRead = 1UL << 0;

    /// <summary>Page request q1: write requested (WR).</summary>
    public const ulong PrqWrite = 1UL << 1;

    /// <summary>Page request q1: last page in group (LPIG).</summary>
    public const ulong PrqLastInGroup = 1UL << 2;

    /// <summary>Page request q1: page request group index (PRGI) in 11:3 (also the page group response's q1).</summary>
    public const int PrqGroupIndexShift = 3;
}
