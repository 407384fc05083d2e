using Iommu.VtD.Hardware;

namespace Iommu.VtD.Driver.Format;

/// <summary>
/// The driver's decoders of the capability registers (the <c>cap_*</c> and <c>ecap_*</c> macros of
/// <c>intel-iommu.h</c>). Bit positions come from <see cref="VtdCap"/> and <see cref="VtdEcap"/>, which
/// the hardware model shares; the hardware builds CAP and ECAP from <see cref="VtdConfig"/> with its own code.
/// </summary>
internal static class DmarCap
{

    [KernelSymbol("cap_ndoms")]
    public static int Ndoms(ulong cap) => 1 << (4 + (2 * (int)((cap >> VtdCap.NdShift) & 7)));

    [KernelSymbol("cap_rwbf")]
    public static bool Rwbf(ulong cap) => (cap & VtdCap.Rwbf) != 0;

    [KernelSymbol("cap_caching_mode")]
    public static bool CachingMode(ulong cap) => (cap & VtdCap.Cm) != 0;

    [KernelSymbol("cap_sagaw")]
    public static int Sagaw(ulong cap) => (int)((cap >> VtdCap.SagawShift) & 0x1F);

    [KernelSymbol("cap_mgaw")]
    public static int Mgaw(ulong cap) => (int)((cap >> VtdCap.MgawShift) & 0x3F) + 1;

    [KernelSymbol("cap_fault_reg_offset")]
    public static uint FaultRegOffset(ulong cap) => (uint)((cap >> VtdCap.FroShift) & 0x3FF) * 16;

    [KernelSymbol("cap_super_page_val")]
    public static int SuperPageVal(ulong cap) => (int)((cap >> VtdCap.SllpsShift) & 0xF);

    [KernelSymbol("cap_pgsel_inv")]
    public static bool PgselInv(ulong cap) => (cap & VtdCap.Psi) != 0;

    [KernelSymbol("cap_num_fault_regs")]
    public static int NumFaultRegs(ulong cap) => (int)((cap >> VtdCap.NfrShift) & 0xFF) + 1;

    [KernelSymbol("cap_max_amask_val")]
    public static int MaxAmaskVal(ulong cap) => (int)((cap >> VtdCap.MamvShift) & 0x3F);

    [KernelSymbol("cap_write_drain")]
    public static bool WriteDrain(ulong cap) => (cap & VtdCap.Dwd) != 0;

    [KernelSymbol("cap_read_drain")]
    public static bool ReadDrain(ulong cap) => (cap & VtdCap.Drd) != 0;

    [KernelSymbol("ecap_dev_iotlb_support")]
    public static bool EcapDevIotlbSupport(ulong ecap) => (ecap & VtdEcap.Dt) != 0;

    [KernelSymbol("ecap_prs")]
    public static bool EcapPrs(ulong ecap) => (ecap & VtdEcap.Prs) != 0;

    // ECAP.DIT (Linux ecap_dit(e) = (e >> 41) & 1). Bit 4 is EIM, which a unit with x2APIC interrupt remapping
    // reports: reading it as DIT put a PFSID into descriptors that a DIT = 0 unit rejects as reserved.
    [KernelSymbol("ecap_dit")]
    public static bool EcapDit(ulong ecap) => (ecap & VtdEcap.Dit) != 0;

    [KernelSymbol("ecap_qis")]
    public static bool EcapQis(ulong ecap) => (ecap & VtdEcap.Qi) != 0;

    [KernelSymbol("ecap_ir_support")]
    public static bool EcapIrSupport(ulong ecap) => (ecap & VtdEcap.Ir) != 0;

    [KernelSymbol("ecap_pass_through")]
    public static bool EcapPassThrough(ulong ecap) => (ecap & VtdEcap.Pt) != 0;

    [KernelSymbol("ecap_sc_support")]
    public static bool EcapSc(ulong ecap) => (ecap & VtdEcap.Sc) != 0;

    [KernelSymbol("ecap_iotlb_offset")]
    public static uint EcapIotlbOffset(ulong ecap) => (uint)((ecap >> VtdEcap.IroShift) & 0x3FF) * 16;

    [KernelSymbol("ecap_srs")]
    public static bool EcapSrs(ulong ecap) => (ecap & VtdEcap.Srs) != 0;

    [KernelSymbol("ecap_pss")]
    public static int EcapPss(ulong ecap) => (int)((ecap >> VtdEcap.PssShift) & 0x1F);

    [KernelSymbol("ecap_pasid")]
    public static bool EcapPasid(ulong ecap) => (ecap & VtdEcap.Pasid) != 0;

    [KernelSymbol("ecap_smts")]
    public static bool EcapSmts(ulong ecap) => (ecap & VtdEcap.Smts) != 0;

    [KernelSymbol("ecap_slts")]
    public static bool EcapSlts(ulong ecap) => (ecap & VtdEcap.Slts) != 0;

    [KernelSymbol("ecap_smpwc")]
    public static bool EcapSmpwc(ulong ecap) => (ecap & VtdEcap.Smpwcs) != 0;

    [KernelSymbol("cap_fl1gp_support")]
    public static bool Fl1gp(ulong cap) => (cap & VtdCap.Fl1gp) != 0;

    [KernelSymbol("cap_5lp_support")]
    public static bool Fl5lp(ulong cap) => (cap & VtdCap.Fl5lp) != 0;

    [KernelSymbol("ecap_flts")]
    public static bool EcapFlts(ulong ecap) => (ecap & VtdEcap.Flts) != 0;

    [KernelSymbol("ecap_pds")]
    public static bool EcapPds(ulong ecap) => (ecap & VtdEcap.Pds) != 0;

    [KernelSymbol("ecap_nest")]
    public static bool EcapNest(ulong ecap) => (ecap & VtdEcap.Nest) != 0;

    [KernelSymbol("ecap_eafs")]
    public static bool EcapEafs(ulong ecap) => (ecap & VtdEcap.Eafs) != 0;
}
