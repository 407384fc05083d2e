namespace Iommu.VtD.Driver.Format;

/// <summary>
/// The driver's decoders of the capability registers (the <c>cap_*</c> and <c>ecap_*</c> macros of
/// <c>intel-iommu.h</c>), each with its bit position written in it as the macro writes it. The hardware
/// model builds CAP and ECAP from its configuration with its own constants; the two meet only in the tests.
/// </summary>
internal static class DmarCap
{

    [KernelSymbol("cap_ndoms")]
    public static int Ndoms(ulong cap) => 1 << (4 + (2 * (int)(cap & 0x7)));

    [KernelSymbol("cap_rwbf")]
    public static bool Rwbf(ulong cap) => ((cap >> 4) & 1) != 0;

    [KernelSymbol("cap_caching_mode")]
    public static bool CachingMode(ulong cap) => ((cap >> 7) & 1) != 0;

    [KernelSymbol("cap_sagaw")]
    public static int Sagaw(ulong cap) => (int)((cap >> 8) & 0x1F);

    [KernelSymbol("cap_mgaw")]
    public static int Mgaw(ulong cap) => (int)((cap >> 16) & 0x3F) + 1;

    [KernelSymbol("cap_fault_reg_offset")]
    public static uint FaultRegOffset(ulong cap) => (uint)((cap >> 24) & 0x3FF) * 16;

    [KernelSymbol("cap_super_page_val")]
    public static int SuperPageVal(ulong cap) => (int)((cap >> 34) & 0xF);

    [KernelSymbol("cap_pgsel_inv")]
    public static bool PgselInv(ulong cap) => ((cap >> 39) & 1) != 0;

    [KernelSymbol("cap_num_fault_regs")]
    public static int NumFaultRegs(ulong cap) => (int)((cap >> 40) & 0xFF) + 1;

    [KernelSymbol("cap_max_amask_val")]
    public static int MaxAmaskVal(ulong cap) => (int)((cap >> 48) & 0x3F);

    [KernelSymbol("cap_write_drain")]
    public static bool WriteDrain(ulong cap) => ((cap >> 54) & 1) != 0;

    [KernelSymbol("cap_read_drain")]
    public static bool ReadDrain(ulong cap) => ((cap >> 55) & 1) != 0;

    [KernelSymbol("ecap_dev_iotlb_support")]
    public static bool EcapDevIotlbSupport(ulong ecap) => ((ecap >> 2) & 0x1) != 0;

    [KernelSymbol("ecap_prs")]
    public static bool EcapPrs(ulong ecap) => ((ecap >> 29) & 0x1) != 0;

    // ECAP.DIT (Linux ecap_dit(e) = (e >> 41) & 1). Bit 4 is EIM, which a unit with x2APIC interrupt remapping
    // reports: reading it as DIT put a PFSID into descriptors that a DIT = 0 unit rejects as reserved.
    [KernelSymbol("ecap_dit")]
    public static bool EcapDit(ulong ecap) => ((ecap >> 41) & 0x1) != 0;

    [KernelSymbol("ecap_qis")]
    public static bool EcapQis(ulong ecap) => (ecap & 0x2) != 0;

    [KernelSymbol("ecap_ir_support")]
    public static bool EcapIrSupport(ulong ecap) => ((ecap >> 3) & 0x1) != 0;

    [KernelSymbol("ecap_pass_through")]
    public static bool EcapPassThrough(ulong ecap) => ((ecap >> 6) & 0x1) != 0;

    [KernelSymbol("ecap_sc_support")]
    public static bool EcapSc(ulong ecap) => ((ecap >> 7) & 0x1) != 0;

    [KernelSymbol("ecap_iotlb_offset")]
    public static uint EcapIotlbOffset(ulong ecap) => (uint)((ecap >> 8) & 0x3FF) * 16;

    [KernelSymbol("ecap_srs")]
    public static bool EcapSrs(ulong ecap) => ((ecap >> 31) & 0x1) != 0;

    [KernelSymbol("ecap_pss")]
    public static int EcapPss(ulong ecap) => (int)((ecap >> 35) & 0x1F);

    [KernelSymbol("ecap_pasid")]
    public static bool EcapPasid(ulong ecap) => ((ecap >> 40) & 0x1) != 0;

    [KernelSymbol("ecap_smts")]
    public static bool EcapSmts(ulong ecap) => ((ecap >> 43) & 0x1) != 0;

    [KernelSymbol("ecap_slts")]
    public static bool EcapSlts(ulong ecap) => ((ecap >> 46) & 0x1) != 0;

    [KernelSymbol("ecap_smpwc")]
    public static bool EcapSmpwc(ulong ecap) => ((ecap >> 48) & 0x1) != 0;

    [KernelSymbol("cap_fl1gp_support")]
    public static bool Fl1gp(ulong cap) => ((cap >> 56) & 1) != 0;

    [KernelSymbol("cap_5lp_support")]
    public static bool Fl5lp(ulong cap) => ((cap >> 60) & 1) != 0;

    [KernelSymbol("ecap_flts")]
    public static bool EcapFlts(ulong ecap) => ((ecap >> 47) & 0x1) != 0;

    [KernelSymbol("ecap_pds")]
    public static bool EcapPds(ulong ecap) => ((ecap >> 42) & 0x1) != 0;

    [KernelSymbol("ecap_nest")]
    public static bool EcapNest(ulong ecap) => ((ecap >> 26) & 0x1) != 0;

    [KernelSymbol("ecap_eafs")]
    public static bool EcapEafs(ulong ecap) => ((ecap >> 34) & 0x1) != 0;
}
