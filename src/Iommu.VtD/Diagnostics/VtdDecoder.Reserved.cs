using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// The decoder's own reading of which bits of a present entry the unit refuses: the masks are written
/// here from the entry formats, not taken from the hardware model, so the two readings can disagree and
/// a test can catch it.
/// </summary>
public static partial class VtdDecoder
{
    // Address bits 51:12 of every pointer and page; those at or above HAW are reserved.
    private const ulong AddressBits = 0x000F_FFFF_FFFF_F000;
    private const ulong Bit62 = 1UL << 62, Snp = 1UL << 11, SlPs = 1UL << 7, FlPs = 1UL << 7;
    private const ulong RootLowReserved = 0xFFE;                            // bits 11:1
    private const ulong LegacyContextLowReserved = 0xFF0;                   // bits 11:4
    private const ulong LegacyContextHighReserved = 0xFFFF_FFFF_FF00_0080;  // bits 63:24 and 7
    private const ulong ScalableContextLowReserved = 0x1E0;                 // bits 8:5
    private const ulong ScalableContextHighReserved = 0xFFFF_FFFF_FFE0_0000; // bits 63:21
    private const ulong Dte = 1UL << 2, Paside = 1UL << 3, Pre = 1UL << 4, RidPriv = 1UL << 20, RidPasid = 0xF_FFFF;
    private const ulong PasidDirectoryLowReserved = 0xFFC;                  // bits 11:2
    private const ulong PasidQ0Reserved = 0xC00, Slade = 1UL << 9;          // bits 11:10; SLADE without SLADS
    private const ulong PasidQ1Reserved = 0x7F_0000;                        // bits 22:16
    private const ulong PasidQ2Reserved = 0xF00, Sre = 1UL << 0, Ere = 1UL << 1, Eafe = 1UL << 7;

    // "n-level" for an AW the unit (or, without a configuration, any unit) accepts, else "reserved (aw)".
    private static string AwName(int aw, VtdConfig? config) =>
        aw > 4 || (config is not null && !config.SupportsAw(aw)) ? Inv($"reserved ({aw})") : Inv($"{aw + 2}-level");

    /// <summary>
    /// Why the unit faults on a present <paramref name="entry"/> and the reason it records, or null when it
    /// goes on. Capability-dependent checks run only with <paramref name="config"/>; HAW is the
    /// configuration's, else the image's.
    /// </summary>
    private static (string Why, VtdFaultReason Reason)? UnitFault(VtdImage image, VtdConfig? config, VtdImageEntry entry)
    {
        ulong v = entry.Value;
        int haw = config?.HostAddressWidth ?? image.HostAddressWidth;
        ulong aboveHaw = haw >= 64 ? 0 : ~0UL << haw;
        bool scalable = image.Mode == VtdTranslationMode.Scalable;
        switch (entry.Kind)
        {
            case VtdImageChunkKind.RootTable:
            {
                if ((v & 1) == 0)
                {
                    return null;
                }

                // Legacy: the whole upper half is reserved; scalable: each half is checked on its own.
                ulong upper = scalable ? 0 : image.ReadUInt64(entry.Address + 8);
                ulong bits = v & (RootLowReserved | aboveHaw);
                return bits != 0 || upper != 0
                    ? (Reserved(bits, upper), scalable ? VtdFaultReason.ScalableRootEntryReserved : VtdFaultReason.RootEntryReserved)
                    : null;
            }

            case VtdImageChunkKind.LegacyContextTable:
            {
                if ((v & 1) == 0)
                {
                    return null;
                }

                ulong c1 = image.ReadUInt64(entry.Address + 8);
                ulong low = v & (LegacyContextLowReserved | aboveHaw), high = c1 & LegacyContextHighReserved;
                if (low != 0 || high != 0)
                {
                    return (Reserved(low, high), VtdFaultReason.ContextEntryReserved);
                }

                int tt = (int)((v >> 2) & 3);
                int aw = (int)(c1 & 7);
                string? invalid = tt switch
                {
                    3 => "TT 11 reserved",
                    1 when config is { DeviceTlb: false } => "TT 01 without device-TLB support (ECAP.DT)",
                    2 when config is { PassThrough: false } => "TT 10 without pass-through support (ECAP.PT)",
                    _ => null,
                } ?? (AwName(aw, config).StartsWith('r') ? Inv($"AW {aw} not in SAGAW") : null);
                return invalid is null ? null : (invalid, VtdFaultReason.ContextEntryInvalid);
            }

            case VtdImageChunkKind.ScalableContextTable:
            {
                if ((v & 1) == 0)
                {
                    return null;
                }

                ulong c1 = image.ReadUInt64(entry.Address + 8);
                ulong rest = image.ReadUInt64(entry.Address + 16) | image.ReadUInt64(entry.Address + 24);
                ulong lowMask = ScalableContextLowReserved | aboveHaw, highMask = ScalableContextHighReserved;
                if (config is not null)
                {
                    lowMask |= (config.DeviceTlb ? 0 : Dte) | (config.PageRequests ? 0 : Pre) | (config.PasidSupport ? 0 : Paside);
                    highMask |= RidPriv | (config.RidPasidSupport ? 0 : RidPasid);
                }

                ulong low = v & lowMask, high = c1 & highMask;
                return low != 0 || high != 0 || rest != 0
                    ? (Reserved(low, high | rest), VtdFaultReason.ScalableContextEntryReserved)
                    : null;
            }

            case VtdImageChunkKind.PasidDirectory:
            {
                ulong bits = v & (PasidDirectoryLowReserved | aboveHaw);
                return (v & 1) != 0 && bits != 0 ? (Reserved(bits, 0), VtdFaultReason.PasidDirectoryEntryReserved) : null;
            }

            case VtdImageChunkKind.PasidTable:
                return (v & 1) == 0 ? null : PasidEntryFault(image, config, entry.Address, v, aboveHaw);
            case VtdImageChunkKind.PageTable:
                return SecondLevelFault(config, v, entry.Level, aboveHaw, scalable);
            case VtdImageChunkKind.FirstLevelTable:
                return FirstLevelFault(config, v, entry.Level, aboveHaw);
            case VtdImageChunkKind.NestedFirstLevelTable:
                // Guest-physical addresses: bounded by the second level's input width, not by HAW.
                return FirstLevelFault(config, v, entry.Level, 0);
            default:
                return null;
        }
    }

    private static (string Why, VtdFaultReason Reason)? PasidEntryFault(VtdImage image, VtdConfig? config, ulong address, ulong q0, ulong aboveHaw)
    {
        ulong q1 = image.ReadUInt64(address + 8), q2 = image.ReadUInt64(address + 16);
        ulong rest = 0;
        for (ulong i = 3; i < 8; i++)
        {
            rest |= image.ReadUInt64(address + (8 * i));
        }

        // FLPTR of a nested entry (PGTT 011) is guest-physical: only its bits above 51 are reserved.
        ulong q0Mask = PasidQ0Reserved | aboveHaw, q2Mask = PasidQ2Reserved | (((q0 >> 6) & 7) == 3 ? ~(AddressBits | 0xFFF) : aboveHaw);
        if (config is not null)
        {
            q0Mask |= Slade; // this model never reports ECAP.SLADS
            q2Mask |= (config.SupervisorRequests ? 0 : Sre) | (config.ExecuteRequests ? 0 : Ere) | (config.ExtendedAccessedFlag ? 0 : Eafe);
        }

        ulong b0 = q0 & q0Mask, b1 = q1 & PasidQ1Reserved, b2 = q2 & q2Mask;
        if (b0 != 0 || b1 != 0 || b2 != 0 || rest != 0)
        {
            return (Inv($"reserved bits q0 0x{b0:x} q1 0x{b1:x} q2 0x{b2:x} q3-q7 0x{rest:x}"), VtdFaultReason.PasidEntryReserved);
        }

        int pgtt = (int)((q0 >> 6) & 7), aw = (int)((q0 >> 2) & 7), flpm = (int)((q2 >> 2) & 3);
        bool pgttOk = pgtt switch
        {
            1 => config?.FirstLevelTranslation ?? true,
            2 => config?.SecondLevelTranslation ?? true,
            3 => config?.NestedTranslation ?? true,
            4 => config?.PassThrough ?? true,
            _ => false,
        };
        string? invalid = !pgttOk ? Inv($"PGTT {pgtt} not supported")
            : pgtt is 1 or 3 && (flpm > 1 || (flpm == 1 && config is { FirstLevel5LevelPaging: false })) ? Inv($"FLPM {flpm} not supported")
            : AwName(aw, config).StartsWith('r') ? Inv($"AW {aw} not in SAGAW")
            : null;
        return invalid is null ? null : (invalid, VtdFaultReason.PasidEntryInvalid);
    }

    // R = W = 0 is not present. Tables: address bits at or above HAW, bit 62, SNP, PS at levels 4 and 5.
    // Leaves: the same but SNP only without snoop control, plus the address bits inside a large page;
    // a page size the unit lacks makes every present leaf of that size fault.
    private static (string Why, VtdFaultReason Reason)? SecondLevelFault(VtdConfig? config, ulong v, int level, ulong aboveHaw, bool scalable)
    {
        if ((v & 3) == 0)
        {
            return null;
        }

        VtdFaultReason reason = scalable ? VtdFaultReason.SecondLevelReserved : VtdFaultReason.PagingEntryReserved;
        bool leaf = level == 1 || (level <= 3 && (v & SlPs) != 0);
        ulong mask = (AddressBits & aboveHaw) | Bit62;
        if (!leaf)
        {
            mask |= Snp | (level >= 4 ? SlPs : 0);
        }
        else
        {
            if (level == 2 && config is { SecondLevel2MiBPages: false })
            {
                return ("2M pages not supported (CAP.SLLPS)", reason);
            }

            if (level == 3 && config is { SecondLevel1GiBPages: false })
            {
                return ("1G pages not supported (CAP.SLLPS)", reason);
            }

            mask |= (config is { SnoopControl: false } ? Snp : 0) | LargePageLowBits(level, 12);
        }

        ulong bits = v & mask;
        return bits != 0 ? (Reserved(bits, 0), reason) : null;
    }

    // P = 0 is not present. Address bits at or above HAW; PS at levels 4 and 5; bits 20:13 / 29:13 of a
    // 2M / 1G leaf (bit 12 there is PAT); a 1G leaf without CAP.FL1GP.
    private static (string Why, VtdFaultReason Reason)? FirstLevelFault(VtdConfig? config, ulong v, int level, ulong aboveHaw)
    {
        if ((v & 1) == 0)
        {
            return null;
        }

        bool leaf = level == 1 || (level <= 3 && (v & FlPs) != 0);
        if (leaf && level == 3 && config is { FirstLevel1GiBPages: false })
        {
            return ("1G pages not supported (CAP.FL1GP)", VtdFaultReason.FirstLevelReserved);
        }

        ulong mask = (AddressBits & aboveHaw) | (leaf ? LargePageLowBits(level, 13) : level >= 4 ? FlPs : 0);
        ulong bits = v & mask;
        return bits != 0 ? (Reserved(bits, 0), VtdFaultReason.FirstLevelReserved) : null;
    }

    // Bits from `from` up to the page size of a level-2 or level-3 leaf.
    private static ulong LargePageLowBits(int level, int from) => level is 2 or 3 ? ((1UL << (12 + (9 * (level - 1)))) - 1) & ~((1UL << from) - 1) : 0;

    private static string Reserved(ulong low, ulong high) =>
        high == 0 ? Inv($"reserved bits 0x{low:x}") : Inv($"reserved bits 0x{low:x}, upper 0x{high:x}");
}
