using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <summary>
/// The decoder's own reading of the faults a request causes by what it asks rather than by an entry's
/// bits: a PASID where the context entry or root-table mode forbids one or beyond PDTS, an input address
/// beyond the width or not canonical, an output in the interrupt window. Like the reserved-bit masks, these
/// tests are written here from the formats, not taken from the hardware model.
/// </summary>
public static partial class VtdDecoder
{
    private const ulong PdtsShift = 9, InterruptWindow = 0xFEE;

    /// <summary>What the request has asked and met so far on its walk, for the checks that depend on it.</summary>
    /// <param name="Iova">The input address.</param>
    /// <param name="SlReadWrite">Every second-level entry so far grants R and W: no read or write can fault on permission.</param>
    /// <param name="FlUserWrite">Every first-level entry so far has U/S and R/W: no user read or write can fault on permission.</param>
    /// <param name="Nested">A nested first-level entry was read: the second level then walks a guest-physical address.</param>
    private readonly record struct RequestState(ulong Iova, bool SlReadWrite, bool FlUserWrite, bool Nested);

    // A request without PASID to 0xFEEx_xxxx is an interrupt message: the unit reads no entry for it.
    private static bool IsInterruptMessage(uint? pasid, ulong iova) => pasid is null && iova >> 20 == InterruptWindow;

    // Checked before the entry's own bits: the unit refuses a PASID in legacy mode before reading the root entry.
    private static (string Why, VtdFaultReason Reason)? RequestFaultBefore(VtdImage image, VtdImageEntry entry, uint? pasid) =>
        entry.Kind == VtdImageChunkKind.RootTable && image.Mode == VtdTranslationMode.Legacy && pasid is uint p
            ? (Inv($"request with PASID {p} while the root table is in legacy mode"), VtdFaultReason.LegacyModePasidRequest)
            : null;

    /// <summary>
    /// Why the unit faults after reading a valid <paramref name="entry"/> because of the request, and the
    /// reason it records, or null. Only what a plain request (untranslated, user, no execute) meets is judged;
    /// permission-dependent output checks are claimed only where no read or write could fault first.
    /// </summary>
    private static (string Why, VtdFaultReason Reason)? RequestFault(VtdImage image, VtdConfig? config, VtdImageEntry entry, uint? pasid, RequestState q)
    {
        ulong v = entry.Value;
        int haw = config?.HostAddressWidth ?? image.HostAddressWidth;
        int mgaw = config?.MaxGuestAddressWidth ?? 64;
        bool scalable = image.Mode == VtdTranslationMode.Scalable;
        switch (entry.Kind)
        {
            case VtdImageChunkKind.LegacyContextTable when (v & VtdFormat.Present) != 0:
            {
                // Pass-through output is the input, so it must fit the host width; a translated input must fit AW and MGAW.
                bool passThrough = ((v >> VtdFormat.ContextTtShift) & 3) == VtdFormat.TtPassThrough;
                int width = passThrough ? haw : Math.Min(30 + (9 * (int)(image.ReadUInt64(entry.Address + 8) & 7)), mgaw);
                return Beyond(q.Iova, width) ? (WidthWhy(q.Iova, width, passThrough), VtdFaultReason.AddressBeyondMgaw) : null;
            }

            case VtdImageChunkKind.ScalableContextTable when (v & VtdFormat.Present) != 0:
            {
                if (pasid is uint p && (v & Paside) == 0)
                {
                    return (Inv($"request with PASID {p} while PASIDE is 0"), VtdFaultReason.PasidDisabled);
                }

                // Without ECAP.RPS a request without PASID uses PASID 0, whatever RID_PASID holds.
                uint effective = pasid ?? (config is { RidPasidSupport: false } ? 0 : (uint)(image.ReadUInt64(entry.Address + 8) & RidPasid));
                int pdts = (int)((v >> (int)PdtsShift) & 7);
                return (effective >> VtdFormat.PasidDirectoryShift) >= (1u << (pdts + 7))
                    ? (Inv($"PASID {effective} beyond the {1u << (pdts + 7)}-entry PASID directory (PDTS {pdts})"), VtdFaultReason.PasidBeyondDirectory)
                    : null;
            }

            case VtdImageChunkKind.PasidTable when (v & VtdFormat.Present) != 0:
            {
                int pgtt = (int)((v >> VtdFormat.PasidPgttShift) & 7);
                if (pgtt is VtdFormat.PgttFirstLevel or VtdFormat.PgttNested)
                {
                    // Bits above the top level's index must repeat its top bit (47 for 4-level, 56 for 5-level).
                    int top = FirstLevelView.Levels(image.ReadUInt64(entry.Address + 16)) == 5 ? 56 : 47;
                    ulong upper = q.Iova >> top;
                    return upper != 0 && upper != ulong.MaxValue >> top
                        ? (Inv($"input address 0x{q.Iova:x} not canonical for {(top == 56 ? 5 : 4)}-level paging"), VtdFaultReason.NonCanonicalAddress)
                        : null;
                }

                bool passThrough = pgtt == VtdFormat.PgttPassThrough;
                int width = passThrough ? haw : Math.Min(30 + (9 * (int)((v >> VtdFormat.PasidAwShift) & 7)), mgaw);
                return Beyond(q.Iova, width) ? (WidthWhy(q.Iova, width, passThrough), VtdFaultReason.ScalableAddressBeyondWidth) : null;
            }

            case VtdImageChunkKind.PageTable when !q.Nested && q.SlReadWrite && IsLeaf(v, entry.Level):
            {
                ulong size = 1UL << (12 + (9 * (entry.Level - 1)));
                ulong pa = (v & VtdFormat.SlAddressMask & ~(size - 1)) | (q.Iova & (size - 1));
                return pa >> 20 == InterruptWindow
                    ? (Inv($"output 0x{pa:x} in the interrupt window"), scalable ? VtdFaultReason.ScalableInterruptAddress : VtdFaultReason.InterruptAddress)
                    : null;
            }

            case VtdImageChunkKind.FirstLevelTable when q.FlUserWrite && (v & VtdFormat.FlPresent) != 0 && FirstLevelView.IsLeaf(v, entry.Level):
            {
                ulong size = 1UL << (12 + (9 * (entry.Level - 1)));
                ulong pa = FirstLevelView.LeafAddress(v, entry.Level) | (q.Iova & (size - 1));
                return pa >> 20 == InterruptWindow
                    ? (Inv($"output 0x{pa:x} in the interrupt window"), VtdFaultReason.ScalableInterruptAddress)
                    : null;
            }

            default:
                return null;
        }
    }

    // Whether an input address has a bit at or above width.
    private static bool Beyond(ulong iova, int width) => width < 64 && iova >> width != 0;

    private static string WidthWhy(ulong iova, int width, bool passThrough) =>
        Inv($"input address 0x{iova:x} beyond the {width}-bit {(passThrough ? "host" : "input")} address width");

    // The state after reading entry: permissions accumulated along the walk.
    private static RequestState After(RequestState q, VtdImageEntry entry) => entry.Kind switch
    {
        VtdImageChunkKind.PageTable => q with { SlReadWrite = q.SlReadWrite && (entry.Value & (VtdFormat.SlRead | VtdFormat.SlWrite)) == (VtdFormat.SlRead | VtdFormat.SlWrite) },
        VtdImageChunkKind.FirstLevelTable => q with { FlUserWrite = q.FlUserWrite && (entry.Value & (VtdFormat.FlUser | VtdFormat.FlReadWrite)) == (VtdFormat.FlUser | VtdFormat.FlReadWrite) },
        VtdImageChunkKind.NestedFirstLevelTable => q with { Nested = true },
        _ => q,
    };
}
