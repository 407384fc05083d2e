using System.Globalization;

namespace Iommu.VtD.Hardware;

/// <summary>
/// What a VT-d remapping unit supports. CAP and ECAP are derived from it with the specification's
/// bit positions (<see cref="Cap"/>, <see cref="Ecap"/>). Use a preset and adjust it with
/// <c>with { … }</c>.
/// </summary>
/// <remarks>
/// <para>The IOTLB registers are placed at 0x0F0 (ECAP.IRO = 0xF) and the fault-recording registers
/// at 0x220 (CAP.FRO = 0x22), where QEMU puts them.</para>
/// <para>First-level and nested translation are modelled when <see cref="FirstLevelTranslation"/> and
/// <see cref="NestedTranslation"/> are set (the presets <see cref="ScalableModeFirstLevel48Bit"/> and
/// <see cref="ScalableModeFirstLevel57Bit"/>). Device-TLBs (ATS, <see cref="DeviceTlb"/>) and page requests
/// (<see cref="PageRequests"/>) are modelled when set (no preset sets them); advanced fault
/// logging and protected memory regions are not modelled, and their capability bits are always clear. Interrupt remapping is reported (ECAP.IR, <see cref="InterruptRemapping"/>) but its
/// table is not modelled: the bit is what the driver and VFIO ask about; GCMD.SIRTP, IRE and CFI are acknowledged in GSTS (IRTPS, IRES, CFIS) as a guest's driver expects.</para>
/// </remarks>
public sealed record VtdConfig
{
    /// <summary>CAP.FRO: fault-recording registers at 0x220.</summary>
    public const uint FaultRecordingRegisterOffset = 0x220;

    /// <summary>ECAP.IRO: IOTLB registers at 0x0F0.</summary>
    public const uint IotlbRegisterOffset = 0x0F0;

    /// <summary>VER value (minor 3:0, major 7:4); 0x10 = 1.0 as QEMU reports, 0x30 = 3.0 for scalable mode.</summary>
    public uint Version { get; init; } = 0x10;

    /// <summary>SAGAW bit 9: 39-bit, 3-level second-level tables.</summary>
    public bool Supports39BitTables { get; init; } = true;

    /// <summary>SAGAW bit 10: 48-bit, 4-level second-level tables.</summary>
    public bool Supports48BitTables { get; init; } = true;

    /// <summary>SAGAW bit 11: 57-bit, 5-level second-level tables.</summary>
    public bool Supports57BitTables { get; init; }

    /// <summary>Maximum guest address width in bits (CAP.MGAW + 1); input addresses at or above 2^MGAW fault, except
    /// through pass-through entries, which stop at <see cref="HostAddressWidth"/> instead (as Linux's identity domain
    /// expects and QEMU does, on a unit whose MGAW is below its HAW).</summary>
    public int MaxGuestAddressWidth { get; init; } = 48;

    /// <summary>Host address width in bits (the DMAR table's HAW): pointer and page-address bits at or above it are reserved.</summary>
    /// <remarks>The addresses software writes to RTADDR, IQA and PQA are used with their bits at or above HAW, so a root
    /// table, invalidation queue or page request queue programmed there faults (root-table read error, IQE with a
    /// fetch error). The specification lets hardware ignore those bits and QEMU masks them, which would move the
    /// structure onto another address; the model keeps the error visible instead (deliberate).</remarks>
    public int HostAddressWidth { get; init; } = 46;

    /// <summary>CAP.ND: the unit supports 2^(4+2·ND) domain ids; DID bits above that width are ignored.</summary>
    public int DomainIdEncoding { get; init; } = 6;

    /// <summary>CAP.SLLPS bit 0: 2 MiB second-level pages.</summary>
    public bool SecondLevel2MiBPages { get; init; } = true;

    /// <summary>CAP.SLLPS bit 1: 1 GiB second-level pages.</summary>
    public bool SecondLevel1GiBPages { get; init; } = true;

    /// <summary>CAP.CM, caching mode: not-present and erroneous entries may be cached, so software must invalidate on not-present → present changes too.</summary>
    public bool CachingMode { get; init; }

    /// <summary>CAP.RWBF: software must flush the write buffer (GCMD.WBF) after table updates.</summary>
    public bool RequiresWriteBufferFlush { get; init; }

    /// <summary>CAP.PSI: page-selective IOTLB invalidation supported (otherwise done as domain-selective).</summary>
    public bool PageSelectiveInvalidation { get; init; } = true;

    /// <summary>CAP.MAMV: largest address mask for page-selective invalidation.</summary>
    public int MaxAddressMaskValue { get; init; } = 18;

    /// <summary>CAP.DRD and CAP.DWD: read and write draining.</summary>
    public bool Draining { get; init; } = true;

    /// <summary>CAP.ESRTPS: GCMD.SRTP also invalidates the context cache, PASID cache and IOTLB.</summary>
    public bool SetRootTableInvalidatesCaches { get; init; }

    /// <summary>Number of fault-recording registers (CAP.NFR + 1), 1–256.</summary>
    public int FaultRecordCount { get; init; } = 1;

    /// <summary>ECAP.C: page-walk coherency.</summary>
    public bool PageWalkCoherency { get; init; }

    /// <summary>ECAP.QI: queued invalidation.</summary>
    public bool QueuedInvalidation { get; init; } = true;

    /// <summary>ECAP.PT: pass-through translation type.</summary>
    public bool PassThrough { get; init; } = true;

    /// <summary>ECAP.SC: snoop control (SNP honoured in second-level leaves).</summary>
    public bool SnoopControl { get; init; }

    /// <summary>ECAP.SMTS: scalable-mode translation (RTADDR.TTM = 01).</summary>
    public bool ScalableMode { get; init; }

    /// <summary>ECAP.SLTS: second-level translation in scalable mode (PGTT = 010).</summary>
    public bool SecondLevelTranslation { get; init; }

    /// <summary>ECAP.PASID: requests with PASID.</summary>
    public bool PasidSupport { get; init; }

    /// <summary>Supported PASID width in bits (ECAP.PSS + 1), 1–20. A request or page request whose PASID is wider faults
    /// 0x46 (the spec calls it an error without a code of its own; 0x46, PASID beyond the directory, is the nearest).</summary>
    public int PasidWidth { get; init; } = 20;

    /// <summary>
    /// ECAP.IR: the unit supports interrupt remapping. The driver reports <c>IOMMU_CAP_INTR_REMAP</c>
    /// when every unit has it, which is what lets VFIO type1 attach without
    /// <c>allow_unsafe_interrupts</c>. The interrupt-remapping table itself is not modelled.
    /// </summary>
    /// <remarks>Off unless set; the presets of real units (<see cref="Legacy48Bit"/>, <see cref="ScalableMode48Bit"/>,
    /// <see cref="ScalableMode57Bit"/>) set it, as every VT-d unit since the first generation has it;
    /// <see cref="Legacy39Bit"/> (QEMU with <c>intremap=off</c>) does not.</remarks>
    public bool InterruptRemapping { get; init; }

    /// <summary>ECAP.RPS: the context entry's RID_PASID gives the PASID of requests without PASID (otherwise PASID 0).</summary>
    public bool RidPasidSupport { get; init; }

    /// <summary>
    /// ECAP.SRS: supervisor requests. Without it the PASID entry's SRE is reserved (0x5A when set), so a
    /// supervisor request (<see cref="Iommu.Devices.DmaRequestAttributes.Privileged"/>) faults 0x5D on every entry. The
    /// driver writes SRE in the PASID entries of aux domains only with it; QEMU 7.2 sets it in scalable mode.
    /// </summary>
    public bool SupervisorRequests { get; init; }

    /// <summary>ECAP.FLTS: first-level translation in scalable mode (PASID entries with PGTT = 001).</summary>
    /// <remarks>The first-level walk is the VT-d specification's (IA-32e entries, canonical check, SRE/WPE/NXE/SMEP/EAFE);
    /// QEMU 7.2 has none and walks PGTT = 001 as second level.</remarks>
    public bool FirstLevelTranslation { get; init; }

    /// <summary>ECAP.NEST: nested translation (PGTT = 011): the first level's table pointers and output are guest-physical, translated through the second level.</summary>
    /// <remarks>Needs <see cref="FirstLevelTranslation"/> and <see cref="SecondLevelTranslation"/>.</remarks>
    public bool NestedTranslation { get; init; }

    /// <summary>ECAP.ERS: execute requests. Without it the PASID entry's ERE is reserved, and an execute request faults 0x5C on every entry.</summary>
    public bool ExecuteRequests { get; init; }

    /// <summary>ECAP.EAFS: the extended-accessed flag. Without it the PASID entry's EAFE is reserved; with EAFE = 1 the first-level walk sets EA (bit 10) beside A.</summary>
    public bool ExtendedAccessedFlag { get; init; }

    /// <summary>CAP.FL1GP: 1 GiB first-level pages. Without it PS = 1 in a first-level PDPE is a reserved-bit fault (0x72).</summary>
    public bool FirstLevel1GiBPages { get; init; }

    /// <summary>CAP.FL5LP: 5-level first-level paging (PASID entry FLPM = 01, 57-bit canonical inputs); without it FLPM = 01 is invalid (0x5B).</summary>
    public bool FirstLevel5LevelPaging { get; init; }

    /// <summary>ECAP.DT: device-TLBs. The context entry's DTE is then defined; ATS translation requests (<see cref="VtdUnit.TranslationRequest"/>) are answered, and device-TLB invalidation descriptors (types 3 and 8) reach the device.</summary>
    /// <remarks>
    /// Needs <see cref="ScalableMode"/>: the legacy context entry's TT = 01 (device-TLB) is not modelled. Translated requests
    /// are not checked: a device with a translation in its ATC reaches that page until software invalidates it, as a device
    /// whose context entry has DTE = 1 does on hardware. A type 3 descriptor (no PASID) drops the range for every PASID of
    /// the device, as a PCIe invalidate request without PASID does (UNVERIFIED).
    /// </remarks>
    public bool DeviceTlb { get; init; }

    /// <summary>ECAP.PRS: page requests. The page request queue registers (PQH, PQT, PQA, PRS, PECTL, PEDATA, PEADDR, PEUADDR) and the context entry's PRE are defined, and page group response descriptors (type 9) are accepted.</summary>
    /// <remarks>
    /// Needs <see cref="DeviceTlb"/> and <see cref="PasidSupport"/> (Linux sets PRE only for ATS devices in scalable mode).
    /// PECTL resets with IM = 1, as FECTL and IECTL do (the specification's value is UNVERIFIED; QEMU resets it to 0):
    /// no page request event is sent before software unmasks it, as Linux does once its handler is installed.
    /// </remarks>
    public bool PageRequests { get; init; }

    /// <summary>ECAP.PDS: page-request drain. The invalidation wait descriptor's PD bit is then accepted (reserved otherwise, as later QEMU treats it).</summary>
    /// <remarks>Needs <see cref="PageRequests"/>. Invalidations complete synchronously here, so a drain is trivially honoured.</remarks>
    public bool PageRequestDrain { get; init; }

    /// <summary>
    /// The response code the unit sends by itself for a page request it drops because the queue is full
    /// or PRS.PRO is set, when that request needs one (LPIG = 1); null (the default) sends none (a model
    /// profile, not a register).
    /// </summary>
    /// <remarks>
    /// Whether hardware answers dropped requests, and with which code, is UNVERIFIED; later QEMU sends no
    /// response (the device waits until it gives up). The default follows QEMU, so software must drain
    /// the queue and clear PRO, as Linux does. A value (0 Success, 1 Invalid Request, 0xF Response
    /// Failure) models hardware that auto-responds.
    /// </remarks>
    public int? PageRequestOverflowResponse { get; init; }

    /// <summary>
    /// Check the first-level walk in later QEMU's order instead of the specification's (a model profile, not a register).
    /// </summary>
    /// <remarks>
    /// The specification's order (the default; its fault priority is UNVERIFIED): per level
    /// read error, P, reserved bits; then the permissions ANDed over the path (U/S 0x81, R/W 0x85,
    /// XD/SMEP 0x82). Later QEMU checks per level read error, P, then U/S (0x81) and write permission
    /// (0x85), then reserved bits (0x72), so a level with both a reserved bit and a permission problem
    /// reports the permission. The permission rules themselves (SRE, WPE, NXE) are the same in both orders.
    /// </remarks>
    public bool QemuFirstLevelCheckOrder { get; init; }

    /// <summary>
    /// IOTLB capacity in entries (a model parameter, not a register). The IOTLB is set-associative:
    /// <see cref="IotlbAssociativity"/> ways per set and a power-of-two number of sets, so the
    /// capacity used is the largest ways × 2^k not above this value (at least one set).
    /// </summary>
    /// <remarks>
    /// Set of an entry: its page number at its level (the input address shifted right by 12, 21 or 30)
    /// plus fixed multiples of its DID and level, modulo the set count. Entries of one DID and level
    /// whose page numbers differ by a multiple of the set count share a set (whatever their PASID). A
    /// fill of a full set replaces a way that holds nothing valid, or else the way filled longest ago
    /// (first in, first out: hits do not refresh an entry). Refilling a key the set already holds
    /// replaces that entry in place.
    /// </remarks>
    public int IotlbCapacity { get; init; } = 4096;

    /// <summary>Ways per IOTLB set (1–32; clamped to <see cref="IotlbCapacity"/>).</summary>
    public int IotlbAssociativity { get; init; } = 8;

    /// <summary>Context-cache capacity in entries, shaped as <see cref="IotlbCapacity"/> is; the set of a device is its source id modulo the set count.</summary>
    public int ContextCacheCapacity { get; init; } = 256;

    /// <summary>Ways per context-cache set (1–32; clamped to <see cref="ContextCacheCapacity"/>).</summary>
    public int ContextCacheAssociativity { get; init; } = 4;

    /// <summary>PASID-cache capacity in entries, shaped as <see cref="IotlbCapacity"/> is; the set of (source id, PASID) is the source id plus a fixed multiple of the PASID, modulo the set count.</summary>
    public int PasidCacheCapacity { get; init; } = 512;

    /// <summary>Ways per PASID-cache set (1–32; clamped to <see cref="PasidCacheCapacity"/>).</summary>
    public int PasidCacheAssociativity { get; init; } = 8;

    /// <summary>
    /// Like QEMU 7.2's default <c>intel-iommu</c> with <c>intremap=off</c>: 39-bit (3-level) tables,
    /// HAW 39, one fault record, VER 1.0. CAP = 0x00D2_008C_2226_0206, ECAP = 0xF42. The same unit as
    /// <see cref="Qemu72AwBits39"/>.
    /// </summary>
    public static VtdConfig Legacy39Bit { get; } = new()
    {
        Supports48BitTables = false,
        MaxGuestAddressWidth = 39,
        HostAddressWidth = 39,
    };

    /// <summary>
    /// A legacy-mode unit with 3- and 4-level tables, 48-bit MGAW, 46-bit HAW, eight fault records and
    /// interrupt remapping.
    /// Not QEMU's <c>aw-bits=48</c> unit, which has one fault record and HAW 48: that one is
    /// <see cref="Qemu72AwBits48"/>.
    /// </summary>
    public static VtdConfig Legacy48Bit { get; } = new()
    {
        FaultRecordCount = 8,
        InterruptRemapping = true,
    };

    /// <summary>
    /// A scalable-mode unit (VER 3.0) with second-level translation, 20-bit PASIDs, RID_PASID and 3-level
    /// tables only: MGAW 39, HAW 39, eight fault records. <see cref="ScalableMode48Bit"/> narrowed to the
    /// width of QEMU's default <c>aw-bits</c>, with the PASID support QEMU 7.2 lacks.
    /// </summary>
    public static VtdConfig ScalableMode39Bit { get; } = new()
    {
        Version = 0x30,
        FaultRecordCount = 8,
        Supports48BitTables = false,
        MaxGuestAddressWidth = 39,
        HostAddressWidth = 39,
        ScalableMode = true,
        SecondLevelTranslation = true,
        PasidSupport = true,
        RidPasidSupport = true,
    };

    /// <summary>A scalable-mode unit (VER 3.0) with second-level translation, 20-bit PASIDs, RID_PASID, 3- and 4-level tables and interrupt remapping.</summary>
    public static VtdConfig ScalableMode48Bit { get; } = new()
    {
        Version = 0x30,
        FaultRecordCount = 8,
        InterruptRemapping = true,
        ScalableMode = true,
        SecondLevelTranslation = true,
        PasidSupport = true,
        RidPasidSupport = true,
    };

    /// <summary>As <see cref="ScalableMode48Bit"/> with 5-level tables and a 57-bit MGAW.</summary>
    public static VtdConfig ScalableMode57Bit { get; } = ScalableMode48Bit with
    {
        Supports57BitTables = true,
        MaxGuestAddressWidth = 57,
    };

    /// <summary>
    /// A 2024-style scalable-mode unit with both stages: <see cref="ScalableMode48Bit"/> plus first-level
    /// translation (ECAP.FLTS), nested translation (ECAP.NEST), supervisor requests (ECAP.SRS), the
    /// extended-accessed flag (ECAP.EAFS) and 1 GiB first-level pages (CAP.FL1GP); 4-level first level only,
    /// no execute requests (ECAP.ERS), no page requests (ECAP.PRS).
    /// </summary>
    /// <remarks>With both stages present, a 6.x driver puts DMA domains on the first level and UNMANAGED domains on the second (<c>first_level_by_default</c>).</remarks>
    public static VtdConfig ScalableModeFirstLevel48Bit { get; } = ScalableMode48Bit with
    {
        FirstLevelTranslation = true,
        NestedTranslation = true,
        SupervisorRequests = true,
        ExtendedAccessedFlag = true,
        FirstLevel1GiBPages = true,
    };

    /// <summary>
    /// A unit for shared virtual addressing (SVA): <see cref="ScalableModeFirstLevel48Bit"/> plus device-TLBs
    /// (ECAP.DT: ATS translation requests, device-TLB invalidations), page requests (ECAP.PRS: the page request
    /// queue, page group responses) and page-request drain (ECAP.PDS, which 5.15's unbind asks for).
    /// </summary>
    /// <remarks>The configuration docs/sva-and-pasid.md builds by hand. SVA on VT-d needs first-level translation
    /// (5.15's <c>intel_svm_check</c>), and IOPF needs PRS on the unit as well as PRI on the device.</remarks>
    public static VtdConfig ScalableModeSva48Bit { get; } = ScalableModeFirstLevel48Bit with
    {
        DeviceTlb = true,
        PageRequests = true,
        PageRequestDrain = true,
    };

    /// <summary>As <see cref="ScalableModeFirstLevel48Bit"/> with 5-level tables on both stages (CAP.FL5LP, SAGAW 57-bit) and a 57-bit MGAW.</summary>
    public static VtdConfig ScalableModeFirstLevel57Bit { get; } = ScalableModeFirstLevel48Bit with
    {
        Supports57BitTables = true,
        MaxGuestAddressWidth = 57,
        FirstLevel5LevelPaging = true,
    };

    /// <summary>
    /// QEMU 7.2's <c>-device intel-iommu,aw-bits=39,intremap=off</c> (39 is QEMU's default width):
    /// legacy mode, SAGAW 39-bit, MGAW 39, HAW 39, one fault record at 0x220, IOTLB registers at 0x0F0,
    /// ND 6, MAMV 18, 2M and 1G pages, PSI, read/write draining, QI, pass-through, VER 1.0.
    /// CAP = 0x00D2_008C_2226_0206, ECAP = 0x0F42. The same unit as <see cref="Legacy39Bit"/>.
    /// </summary>
    /// <remarks>
    /// QEMU's default <c>intremap=on</c> (under TCG) also sets ECAP.IR and ECAP.MHMV = 0xF (ECAP = 0xF0_0F4A);
    /// interrupt remapping is not modelled here. Add <c>CachingMode = true</c> for QEMU's
    /// <c>caching-mode=on</c> (CAP.CM), as a VFIO-assigned device under QEMU needs.
    /// </remarks>
    public static VtdConfig Qemu72AwBits39 { get; } = Legacy39Bit;

    /// <summary>
    /// QEMU 7.2's <c>-device intel-iommu,aw-bits=48,intremap=off</c>: as <see cref="Qemu72AwBits39"/>
    /// with SAGAW 39- and 48-bit, MGAW 48 and HAW 48. CAP = 0x00D2_008C_222F_0606, ECAP = 0x0F42.
    /// </summary>
    /// <remarks>
    /// Differs from <see cref="Legacy48Bit"/> in the fault records (one, not eight) and the host address
    /// width (48, not 46: table pointers may use bits 47:46). ECAP.IR with <c>intremap=on</c>: see
    /// <see cref="Qemu72AwBits39"/>.
    /// </remarks>
    public static VtdConfig Qemu72AwBits48 { get; } = new()
    {
        HostAddressWidth = 48,
    };

    /// <summary>
    /// QEMU 7.2's <c>-device intel-iommu,aw-bits=39,x-scalable-mode=on,intremap=off</c>: as
    /// <see cref="Qemu72AwBits39"/> with scalable-mode translation (ECAP.SMTS), second-level translation
    /// (ECAP.SLTS) and supervisor requests (ECAP.SRS); VER stays 1.0, as QEMU reports it.
    /// CAP = 0x00D2_008C_2226_0206, ECAP = 0x4800_8000_0F42.
    /// </summary>
    /// <remarks>
    /// QEMU 7.2 sets neither ECAP.PASID nor ECAP.RPS: only requests without PASID translate (through
    /// PASID 0, the kernel's <c>PASID_RID2PASID</c>), so the driver refuses aux domains
    /// (<c>intel_iommu_dev_has_feat(IOMMU_DEV_FEAT_AUX)</c> is false). For PASID-granular aux domains
    /// use <see cref="ScalableMode39Bit"/> or <see cref="ScalableMode48Bit"/>, which QEMU 7.2 cannot
    /// emulate. ECAP.IR with <c>intremap=on</c>: see <see cref="Qemu72AwBits39"/>.
    /// </remarks>
    public static VtdConfig Qemu72ScalableAwBits39 { get; } = Legacy39Bit with
    {
        ScalableMode = true,
        SecondLevelTranslation = true,
        SupervisorRequests = true,
    };

    /// <summary>
    /// QEMU 7.2's <c>-device intel-iommu,aw-bits=48,x-scalable-mode=on,intremap=off</c>: as
    /// <see cref="Qemu72ScalableAwBits39"/> with SAGAW 39- and 48-bit, MGAW 48 and HAW 48.
    /// CAP = 0x00D2_008C_222F_0606, ECAP = 0x4800_8000_0F42.
    /// </summary>
    /// <remarks>
    /// Differs from <see cref="ScalableMode48Bit"/> in VER (1.0, not 3.0), PASID support (none: no aux
    /// domains, see <see cref="Qemu72ScalableAwBits39"/>), RID_PASID (ECAP.RPS clear), fault records
    /// (one, not eight), ECAP.SRS (set) and HAW (48, not 46).
    /// </remarks>
    public static VtdConfig Qemu72ScalableAwBits48 { get; } = new()
    {
        HostAddressWidth = 48,
        ScalableMode = true,
        SecondLevelTranslation = true,
        SupervisorRequests = true,
    };

    /// <summary>The SAGAW field (CAP 12:8).</summary>
    public uint Sagaw =>
        (Supports39BitTables ? 1u << 1 : 0) | (Supports48BitTables ? 1u << 2 : 0) | (Supports57BitTables ? 1u << 3 : 0);

    /// <summary>The capability register value.</summary>
    public ulong Cap =>
        (ulong)(uint)DomainIdEncoding
        | (RequiresWriteBufferFlush ? VtdCap.Rwbf : 0)
        | (CachingMode ? VtdCap.Cm : 0)
        | ((ulong)Sagaw << VtdCap.SagawShift)
        | ((ulong)(uint)(MaxGuestAddressWidth - 1) << VtdCap.MgawShift)
        | ((ulong)(FaultRecordingRegisterOffset / 16) << VtdCap.FroShift)
        | ((SecondLevel2MiBPages ? 1UL : 0) << VtdCap.SllpsShift)
        | ((SecondLevel1GiBPages ? 2UL : 0) << VtdCap.SllpsShift)
        | (PageSelectiveInvalidation ? VtdCap.Psi : 0)
        | ((ulong)(uint)(FaultRecordCount - 1) << VtdCap.NfrShift)
        | ((ulong)(uint)MaxAddressMaskValue << VtdCap.MamvShift)
        | (Draining ? VtdCap.Dwd | VtdCap.Drd : 0)
        | (FirstLevel1GiBPages ? VtdCap.Fl1gp : 0)
        | (FirstLevel5LevelPaging ? VtdCap.Fl5lp : 0)
        | (SetRootTableInvalidatesCaches ? VtdCap.Esrtps : 0);

    /// <summary>The extended capability register value.</summary>
    public ulong Ecap =>
        (PageWalkCoherency ? VtdEcap.C : 0)
        | (QueuedInvalidation ? VtdEcap.Qi : 0)
        | (DeviceTlb ? VtdEcap.Dt : 0)
        | (PageRequests ? VtdEcap.Prs : 0)
        | (PageRequestDrain ? VtdEcap.Pds : 0)
        | (InterruptRemapping ? VtdEcap.Ir : 0)
        | (PassThrough ? VtdEcap.Pt : 0)
        | (SnoopControl ? VtdEcap.Sc : 0)
        | (SupervisorRequests ? VtdEcap.Srs : 0)
        | (NestedTranslation ? VtdEcap.Nest : 0)
        | (ExecuteRequests ? VtdEcap.Ers : 0)
        | (ExtendedAccessedFlag ? VtdEcap.Eafs : 0)
        | (FirstLevelTranslation ? VtdEcap.Flts : 0)
        | ((ulong)(IotlbRegisterOffset / 16) << VtdEcap.IroShift)
        | (PasidSupport ? ((ulong)(uint)(PasidWidth - 1) << VtdEcap.PssShift) | VtdEcap.Pasid : 0)
        | (ScalableMode ? VtdEcap.Smts : 0)
        | (SecondLevelTranslation ? VtdEcap.Slts : 0)
        | (ScalableMode && PageWalkCoherency ? VtdEcap.Smpwcs : 0)
        | (RidPasidSupport ? VtdEcap.Rps : 0);

    /// <summary>Whether SAGAW allows the context/PASID AW encoding <paramref name="aw"/> (1 = 39-bit, 2 = 48-bit, 3 = 57-bit).</summary>
    /// <param name="aw">AW field value.</param>
    /// <returns>True when supported.</returns>
    public bool SupportsAw(int aw) => aw is >= 0 and <= 4 && (Sagaw & (1u << aw)) != 0;

    /// <summary>Throws <see cref="ArgumentException"/> when the combination cannot describe a unit.</summary>
    public void Validate()
    {
        Check(Sagaw != 0, "at least one of the 39/48/57-bit table formats must be supported");
        Check(MaxGuestAddressWidth is >= 30 and <= 64, "MaxGuestAddressWidth must be 30–64");
        Check(HostAddressWidth is >= 32 and <= 52, "HostAddressWidth must be 32–52");
        Check(DomainIdEncoding is >= 0 and <= 6, "DomainIdEncoding (CAP.ND) must be 0–6");
        Check(FaultRecordCount is >= 1 and <= 256, "FaultRecordCount must be 1–256");
        Check(MaxAddressMaskValue is >= 0 and <= 63, "MaxAddressMaskValue must be 0–63");
        Check(PasidWidth is >= 1 and <= 20, "PasidWidth must be 1–20");
        Check(!SecondLevelTranslation || ScalableMode, "SecondLevelTranslation needs ScalableMode");
        Check(!PasidSupport || ScalableMode, "PasidSupport needs ScalableMode");
        Check(!RidPasidSupport || ScalableMode, "RidPasidSupport needs ScalableMode");
        Check(!SupervisorRequests || ScalableMode, "SupervisorRequests needs ScalableMode");
        Check(!FirstLevelTranslation || ScalableMode, "FirstLevelTranslation needs ScalableMode");
        Check(!NestedTranslation || (FirstLevelTranslation && SecondLevelTranslation), "NestedTranslation needs FirstLevelTranslation and SecondLevelTranslation");
        Check(!ExecuteRequests || ScalableMode, "ExecuteRequests needs ScalableMode");
        Check(!ExtendedAccessedFlag || FirstLevelTranslation, "ExtendedAccessedFlag needs FirstLevelTranslation");
        Check(!FirstLevel1GiBPages || FirstLevelTranslation, "FirstLevel1GiBPages needs FirstLevelTranslation");
        Check(!FirstLevel5LevelPaging || FirstLevelTranslation, "FirstLevel5LevelPaging needs FirstLevelTranslation");
        Check(!DeviceTlb || ScalableMode, "DeviceTlb needs ScalableMode");
        Check(!PageRequests || (DeviceTlb && PasidSupport), "PageRequests needs DeviceTlb and PasidSupport");
        Check(!PageRequestDrain || PageRequests, "PageRequestDrain needs PageRequests");
        Check(PageRequestOverflowResponse is null or (>= 0 and <= 0xF), "PageRequestOverflowResponse must be null or 0–15");
        Check(IotlbCapacity is >= 1 and <= 1 << 20, "IotlbCapacity must be 1–1048576");
        Check(ContextCacheCapacity is >= 1 and <= 1 << 16, "ContextCacheCapacity must be 1–65536");
        Check(PasidCacheCapacity is >= 1 and <= 1 << 20, "PasidCacheCapacity must be 1–1048576");
        Check(IotlbAssociativity is >= 1 and <= 32, "IotlbAssociativity must be 1–32");
        Check(ContextCacheAssociativity is >= 1 and <= 32, "ContextCacheAssociativity must be 1–32");
        Check(PasidCacheAssociativity is >= 1 and <= 32, "PasidCacheAssociativity must be 1–32");
    }

    private static void Check(bool ok, string message)
    {
        if (!ok)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Invalid VT-d configuration: {message}."));
        }
    }
}
