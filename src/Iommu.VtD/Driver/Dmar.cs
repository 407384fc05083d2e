namespace Iommu.VtD.Driver;

/// <summary>
/// The driver's own register offsets, bits and capability decoders (Linux <c>intel-iommu.h</c>),
/// kept apart from the hardware model's so that a disagreement shows up in tests.
/// </summary>
internal static class Dmar
{
    public const uint CapReg = 0x08, EcapReg = 0x10, GcmdReg = 0x18, GstsReg = 0x1C, RtaddrReg = 0x20, CcmdReg = 0x28;
    public const uint FstsReg = 0x34, FectlReg = 0x38, IqhReg = 0x80, IqtReg = 0x88, IqaReg = 0x90, IqercdReg = 0xB0;

    public const uint GcmdTe = 1u << 31, GcmdSrtp = 1u << 30, GcmdWbf = 1u << 27, GcmdQie = 1u << 26;
    public const uint FstsIqe = 1u << 4, FstsPpf = 1u << 1, FstsPfo = 1u << 0;
    public const ulong RtaddrSmt = 1UL << 10;

    // DMA_CCMD_*: context-cache command register.
    public const ulong CcmdIcc = 1UL << 63;
    public const int CcmdGlobal = 1, CcmdDomain = 2, CcmdDevice = 3;

    // DMA_TLB_*: IOTLB register.
    public const ulong IotlbIvt = 1UL << 63, IotlbDr = 1UL << 49, IotlbDw = 1UL << 48;
    public const int TlbGlobal = 1, TlbDomain = 2, TlbPage = 3;

    // Queued-invalidation descriptor types (QI_*_TYPE).
    public const ulong QiCcType = 1, QiIotlbType = 2, QiIwdType = 5, QiEiotlbType = 6, QiPcType = 7;
    public const ulong QiIwdStatusWrite = 1UL << 5;
    public const uint QiDone = 1, QiInUse = 0;

    // Context entries.
    public const ulong ContextPresent = 1, ContextPaside = 1UL << 3;
    public const int ContextTtMultiLevel = 0, ContextTtPassThrough = 2;

    // PASID entries.
    public const ulong PasidPresent = 1;
    public const int PgttSecondLevel = 2, PgttPassThrough = 4;
    public const int PasidPdeShift = 6;
    public const uint PasidPteMask = 0x3F;
    public const int PasidMin = 1;
    public const ushort FlptDefaultDid = 1;

    public static int CapNdoms(ulong cap) => 1 << (4 + (2 * (int)(cap & 7)));

    public static bool CapRwbf(ulong cap) => (cap & (1UL << 4)) != 0;

    public static bool CapCachingMode(ulong cap) => (cap & (1UL << 7)) != 0;

    public static int CapSagaw(ulong cap) => (int)((cap >> 8) & 0x1F);

    public static int CapMgaw(ulong cap) => (int)((cap >> 16) & 0x3F) + 1;

    public static int CapSuperPageVal(ulong cap) => (int)((cap >> 34) & 0xF);

    public static bool CapPgselInv(ulong cap) => (cap & (1UL << 39)) != 0;

    public static int CapMaxAmaskVal(ulong cap) => (int)((cap >> 48) & 0x3F);

    public static bool CapWriteDrain(ulong cap) => (cap & (1UL << 54)) != 0;

    public static bool CapReadDrain(ulong cap) => (cap & (1UL << 55)) != 0;

    public static bool EcapQis(ulong ecap) => (ecap & (1UL << 1)) != 0;

    public static bool EcapIrSupport(ulong ecap) => (ecap & (1UL << 3)) != 0;

    public static bool EcapPassThrough(ulong ecap) => (ecap & (1UL << 6)) != 0;

    public static bool EcapSc(ulong ecap) => (ecap & (1UL << 7)) != 0;

    public static uint EcapIotlbOffset(ulong ecap) => (uint)((ecap >> 8) & 0x3FF) * 16;

    public static bool EcapNest(ulong ecap) => (ecap & (1UL << 26)) != 0;

    public static bool EcapSrs(ulong ecap) => (ecap & (1UL << 31)) != 0;

    public static bool EcapPasid(ulong ecap) => (ecap & (1UL << 40)) != 0;

    public static bool EcapSmts(ulong ecap) => (ecap & (1UL << 43)) != 0;

    public static bool EcapSlts(ulong ecap) => (ecap & (1UL << 46)) != 0;

    public static bool EcapSmpwc(ulong ecap) => (ecap & (1UL << 48)) != 0;

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
