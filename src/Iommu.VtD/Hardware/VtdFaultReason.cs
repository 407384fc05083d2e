namespace Iommu.VtD.Hardware;

/// <summary>
/// Fault reasons (FRCD.FR) with the exact codes of the VT-d specification: 0x1–0xE for legacy mode,
/// 0x30 and above for scalable mode. The comment on each member gives the spec condition code.
/// </summary>
/// <remarks>
/// <para>A member's value is its code, so <c>(byte)reason</c> gives the number. An enum prints its name
/// alone; <see cref="VtdFaultReasonExtensions.Format"/> gives the hex code with the name
/// (<c>0x85 (ScalableWrite)</c>), as <see cref="Iommu.Devices.DmaFaultReason"/> and
/// <see cref="Iommu.VtD.Driver.DmarFaultRecord"/> print it. The names are this library's: the
/// specification numbers its conditions (LGN.2, SGN.6 …) without naming them, and the kernel's
/// <c>dmar_get_fault_reason</c> has sentences rather than identifiers.</para>
/// <para>QEMU 7.2 reuses the legacy codes for root, context and second-level faults in scalable mode and
/// reports every PASID-structure problem as <see cref="PasidTableReadError"/> (0x58); this model
/// reports the specification's codes.</para>
/// </remarks>
public enum VtdFaultReason : byte
{
    /// <summary>No fault.</summary>
    None = 0x0,

    /// <summary>LRT.2: root entry not present.</summary>
    RootEntryNotPresent = 0x1,

    /// <summary>LCT.2: context entry not present.</summary>
    ContextEntryNotPresent = 0x2,

    /// <summary>LCT.4.x: invalid context entry programming (AW not in SAGAW, unsupported TT, unreadable SLPTPTR).</summary>
    ContextEntryInvalid = 0x3,

    /// <summary>LGN.1.x: input address beyond the address width.</summary>
    AddressBeyondMgaw = 0x4,

    /// <summary>LGN.2: write request without write permission.</summary>
    Write = 0x5,

    /// <summary>LGN.3: read request without read permission.</summary>
    Read = 0x6,

    /// <summary>LSL.1: error reading a second-level paging entry.</summary>
    PagingEntryInvalid = 0x7,

    /// <summary>LRT.1: error reading the root entry.</summary>
    RootTableInvalid = 0x8,

    /// <summary>LCT.1: error reading the context entry.</summary>
    ContextTableInvalid = 0x9,

    /// <summary>LRT.3: reserved bits set in a present root entry.</summary>
    RootEntryReserved = 0xA,

    /// <summary>LCT.3: reserved bits set in a present context entry.</summary>
    ContextEntryReserved = 0xB,

    /// <summary>LSL.2: reserved bits set in a present second-level paging entry.</summary>
    PagingEntryReserved = 0xC,

    /// <summary>LCT.5: translation type blocks the request (ATS requests; not produced by this model).</summary>
    ContextEntryTranslationType = 0xD,

    /// <summary>LGN.4: translated address falls in the interrupt range 0xFEEx_xxxx.</summary>
    InterruptAddress = 0xE,

    /// <summary>RTA.1: invalid root-table address or translation-table mode.</summary>
    RootTableAddressInvalid = 0x30,

    /// <summary>RTA.2: request with PASID while the root table is in legacy mode.</summary>
    LegacyModePasidRequest = 0x31,

    /// <summary>RTA.3: page request while the root table is in legacy mode.</summary>
    LegacyModePageRequest = 0x32,

    /// <summary>SRT.1: error reading the scalable-mode root entry.</summary>
    ScalableRootTableReadError = 0x38,

    /// <summary>SRT.2: scalable-mode root entry half (LP or UP) not present.</summary>
    ScalableRootEntryNotPresent = 0x39,

    /// <summary>SRT.3: reserved bits set in the scalable-mode root entry.</summary>
    ScalableRootEntryReserved = 0x3A,

    /// <summary>SCT.1: error reading the scalable-mode context entry.</summary>
    ScalableContextTableReadError = 0x40,

    /// <summary>SCT.2: scalable-mode context entry not present.</summary>
    ScalableContextEntryNotPresent = 0x41,

    /// <summary>SCT.3: reserved bits set in the scalable-mode context entry.</summary>
    ScalableContextEntryReserved = 0x42,

    /// <summary>SCT.4.x: invalid scalable-mode context entry programming.</summary>
    ScalableContextEntryInvalid = 0x43,

    /// <summary>SCT.5: DTE clear for an ATS request.</summary>
    DeviceTlbDisabled = 0x44,

    /// <summary>SCT.6: PASIDE clear for a request with PASID.</summary>
    PasidDisabled = 0x45,

    /// <summary>SCT.7: PASID beyond the directory size given by PDTS.</summary>
    PasidBeyondDirectory = 0x46,

    /// <summary>SCT.8: PRE clear for a page request.</summary>
    PageRequestDisabled = 0x47,

    /// <summary>SCT.9: error in the RID_PASID field.</summary>
    RidPasidInvalid = 0x48,

    /// <summary>SPD.1: error reading the PASID-directory entry.</summary>
    PasidDirectoryReadError = 0x50,

    /// <summary>SPD.2: PASID-directory entry not present.</summary>
    PasidDirectoryEntryNotPresent = 0x51,

    /// <summary>SPD.3: reserved bits set in the PASID-directory entry.</summary>
    PasidDirectoryEntryReserved = 0x52,

    /// <summary>SPT.1: error reading the PASID-table entry.</summary>
    PasidTableReadError = 0x58,

    /// <summary>SPT.2: PASID-table entry not present.</summary>
    PasidEntryNotPresent = 0x59,

    /// <summary>SPT.3: reserved bits set in the PASID-table entry.</summary>
    PasidEntryReserved = 0x5A,

    /// <summary>SPT.4.x: invalid PASID-table entry programming (PGTT, AW).</summary>
    PasidEntryInvalid = 0x5B,

    /// <summary>SPT.5: ERE clear for an execute request.</summary>
    ExecuteRequestsDisabled = 0x5C,

    /// <summary>SPT.6: SRE clear for a supervisor request.</summary>
    SupervisorRequestsDisabled = 0x5D,

    /// <summary>SFL.1: error reading a first-level entry.</summary>
    FirstLevelReadError = 0x70,

    /// <summary>SFL.2: first-level entry not present.</summary>
    FirstLevelNotPresent = 0x71,

    /// <summary>SFL.3: reserved bits set in a first-level entry.</summary>
    FirstLevelReserved = 0x72,

    /// <summary>SFL.4: error reading the first-level root (bad FLPTR).</summary>
    FirstLevelPointerInvalid = 0x73,

    /// <summary>SFL.5: nested: a first-level table (FLPTR or a next-table address) is a guest-physical address beyond the second level's input width.</summary>
    FirstLevelTableBeyondWidth = 0x74,

    /// <summary>SFL.6: nested: the second level denies read on the top first-level table (FL-PML4/PML5).</summary>
    FirstLevelRootReadDenied = 0x75,

    /// <summary>SFL.7: nested: the second level denies read on a lower first-level table.</summary>
    FirstLevelEntryReadDenied = 0x76,

    /// <summary>SFL.8: nested: an accessed/dirty update of a first-level entry needs second-level write permission it lacks.</summary>
    FirstLevelEntryWriteDenied = 0x77,

    /// <summary>SSL.1: error reading a second-level entry (below the top level).</summary>
    SecondLevelReadError = 0x78,

    /// <summary>SSL.2: R/W permission missing on a second-level entry during a nested walk.</summary>
    SecondLevelNestedPermission = 0x79,

    /// <summary>SSL.3: reserved bits set in a second-level entry.</summary>
    SecondLevelReserved = 0x7A,

    /// <summary>SSL.4: invalid SLPTPTR (the top-level second-level table cannot be read).</summary>
    SecondLevelPointerInvalid = 0x7B,

    /// <summary>SSL.5: second-level A/D update needed without snoop.</summary>
    SecondLevelAccessedDirtyNoSnoop = 0x7C,

    /// <summary>SGN.1: first-level input address not canonical.</summary>
    NonCanonicalAddress = 0x80,

    /// <summary>SGN.2: U/S clear for a user request.</summary>
    UserAccessDenied = 0x81,

    /// <summary>SGN.3: no execute permission.</summary>
    ExecuteDenied = 0x82,

    /// <summary>SGN.4.x: input address beyond the address width.</summary>
    ScalableAddressBeyondWidth = 0x83,

    /// <summary>SGN.5: second-level entry address beyond the maximum.</summary>
    SecondLevelAddressBeyondWidth = 0x84,

    /// <summary>SGN.6: write request without write permission.</summary>
    ScalableWrite = 0x85,

    /// <summary>SGN.7: read request without read permission.</summary>
    ScalableRead = 0x86,

    /// <summary>SGN.8: translated address falls in the interrupt range.</summary>
    ScalableInterruptAddress = 0x87,

    /// <summary>SFL.9: first-level A/D update needed without snoop.</summary>
    FirstLevelAccessedDirtyNoSnoop = 0x90,

    /// <summary>SFL.10: first-level A/D update failed.</summary>
    FirstLevelAccessedDirtyFailed = 0x91,
}
