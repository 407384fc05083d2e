namespace Iommu.VtD.Driver;

/// <summary>
/// The driver's register offsets and register command bits (Linux <c>intel-iommu.h</c>), and the
/// address-width arithmetic. The in-memory formats are in <c>Driver/Format</c>; the hardware model
/// keeps its own register table, so a disagreement shows up in tests.
/// </summary>
internal static class Dmar
{
    public const uint CapReg = 0x08, EcapReg = 0x10, GcmdReg = 0x18, GstsReg = 0x1C, RtaddrReg = 0x20, CcmdReg = 0x28;
    public const uint FstsReg = 0x34, FectlReg = 0x38, IqhReg = 0x80, IqtReg = 0x88, IqaReg = 0x90, IqercdReg = 0xB0;

    public const uint GcmdTe = 1u << 31, GcmdSrtp = 1u << 30, GcmdWbf = 1u << 27, GcmdQie = 1u << 26;
    public const uint FstsIqe = 1u << 4, FstsPpf = 1u << 1, FstsPfo = 1u << 0;

    // FSTS.FRI, bits 15:8: the first pending fault record (dma_fsts_fault_record_index).
    public const int FstsFriShift = 8;

    public const ulong RtaddrSmt = 1UL << 10;

    // IQA_REG: DW (bit 11) selects 256-bit descriptors; QS (2:0) is log2 of the queue's pages.
    public const ulong IqaDw256 = 1UL << 11;

    // DMA_CCMD_*: context-cache command register.
    public const ulong CcmdIcc = 1UL << 63;
    public const int CcmdGlobal = 1, CcmdDomain = 2, CcmdDevice = 3;
    public const int CcmdCirgShift = 61, CcmdFmShift = 32, CcmdSidShift = 16;

    // DMA_TLB_*: IOTLB register.
    public const ulong IotlbIvt = 1UL << 63, IotlbDr = 1UL << 49, IotlbDw = 1UL << 48;
    public const int TlbGlobal = 1, TlbDomain = 2, TlbPage = 3;
    public const int IotlbIirgShift = 60, IotlbDidShift = 32;

    // Invalidation-wait status words (QI_DONE / QI_IN_USE).
    public const uint QiDone = 1, QiInUse = 0;

    public const int PasidMin = 1;
    public const ushort FlptDefaultDid = 1;

    /// <summary><c>width_to_agaw</c>: ceil((w − 30) / 9).</summary>
    public static int WidthToAgaw(int width) => (width - 30 + 8) / 9;

    /// <summary><c>agaw_to_width</c>: min(30 + 9·agaw, 64).</summary>
    public static int AgawToWidth(int agaw) => Math.Min(30 + (agaw * 9), 64);

    /// <summary><c>guestwidth_to_adjustwidth</c>: round up to 12 + 9k, at most 64.</summary>
    public static int GuestWidthToAdjustWidth(int gaw)
    {
        int r = (gaw - 12) % 9;
        int agaw = r == 0 ? gaw : gaw + 9 - r;
        return Math.Min(agaw, 64);
    }
}
