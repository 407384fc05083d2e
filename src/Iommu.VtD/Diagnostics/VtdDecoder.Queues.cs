using System.Globalization;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Diagnostics;

/// <content>Decoders of the two queues' descriptors: invalidation descriptors (software → unit) and page requests (unit → software).</content>
public static partial class VtdDecoder
{
    /// <summary>
    /// Decodes a page request descriptor as the unit wrote it into the page request queue, e.g.
    /// "page request 00:05.0 PASID 1 at 0x7f0000001000: write, last in group 3".
    /// </summary>
    /// <param name="q0">Bits 63:0 of the descriptor.</param>
    /// <param name="q1">Bits 127:64.</param>
    /// <returns>The description; a descriptor of another type reads "descriptor type N (not a page request)".</returns>
    public static string DescribePageRequest(ulong q0, ulong q1)
    {
        // The type is bits 7:0; PP (bit 8) lies above it.
        if ((q0 & 0xFF) != VtdFormat.PrqDescType)
        {
            return string.Create(CultureInfo.InvariantCulture, $"descriptor type {q0 & 0xFF} (not a page request)");
        }

        string pasid = (q0 & VtdFormat.PrqPasidPresent) != 0
            ? string.Create(CultureInfo.InvariantCulture, $" PASID {(q0 >> VtdFormat.PrqPasidShift) & 0xF_FFFF}")
            : " without PASID";
        var access = new List<string>(4);
        if ((q1 & VtdFormat.PrqRead) != 0)
        {
            access.Add("read");
        }

        if ((q1 & VtdFormat.PrqWrite) != 0)
        {
            access.Add("write");
        }

        if ((q0 & VtdFormat.PrqExecute) != 0)
        {
            access.Add("execute");
        }

        if ((q0 & VtdFormat.PrqPrivileged) != 0)
        {
            access.Add("privileged");
        }

        string what = access.Count == 0 ? "no access (stop marker)" : string.Join('+', access);
        ulong prgi = (q1 >> VtdFormat.PrqGroupIndexShift) & 0x1FF;
        string group = (q1 & VtdFormat.PrqLastInGroup) != 0
            ? string.Create(CultureInfo.InvariantCulture, $"last in group {prgi}")
            : string.Create(CultureInfo.InvariantCulture, $"group {prgi}");
        return string.Create(CultureInfo.InvariantCulture, $"page request {Rid((ushort)(q0 >> VtdFormat.PrqRidShift))}{pasid} at 0x{q1 & ~0xFFFUL:x}: {what}, {group}");
    }

    /// <summary>
    /// Decodes an invalidation descriptor as the unit reads it from the invalidation queue: its type and the
    /// fields that select what it drops or answers, e.g. "PASID-IOTLB invalidate DID 1 PASID 2: page 0x7f0000000000
    /// (AM 0)" or "page group response 00:05.0 PASID 2 group 3: Success". A descriptor the unit rejects with an
    /// invalidation queue error says why: "reserved granularity", "descriptor type N (reserved)", or a trailing
    /// "(reserved bits set: q0 0x…, q1 0x…)".
    /// </summary>
    /// <param name="q0">Bits 63:0 of the descriptor.</param>
    /// <param name="q1">Bits 127:64.</param>
    /// <returns>The description; an undefined type reads "descriptor type N (reserved)".</returns>
    /// <remarks>
    /// Addresses are shown aligned down to the range the descriptor names (2^AM pages; a PASID-IOTLB AM above 52
    /// counts as 52). What depends on the unit is not judged
    /// here: types 6–9 need a 256-bit queue (whose bits 255:128 are reserved), an IOTLB page-selective AM must not
    /// exceed CAP.MAMV, PD needs ECAP.PDS, type 9 needs ECAP.PRS, and the PFSID bits of device-TLB descriptors are
    /// taken as reserved (no ECAP.DIT).
    /// </remarks>
    public static string DescribeInvalidation(ulong q0, ulong q1)
    {
        int type = (int)((q0 & 0xF) | ((q0 >> 5) & 0x70));
        int g = (int)((q0 >> VtdFormat.DescGranularityShift) & 3);
        ulong did = (q0 >> VtdFormat.DescDidShift) & 0xFFFF;
        ulong pasid = (q0 >> VtdFormat.DescPasidShift) & 0xF_FFFF;
        int am = (int)(q1 & 0x3F);

        // Page-selective ranges are 2^AM pages aligned down (a PASID-IOTLB AM above 52 counts as 52).
        // (2^52 pages are the whole 64-bit space: the aligned address is 0.)
        ulong addr = am >= 52 ? 0 : q1 & ~0xFFFUL & ~((1UL << (am + 12)) - 1);
        int fm = (int)((q0 >> VtdFormat.DescFmShift) & 3);
        IFormatProvider c = CultureInfo.InvariantCulture;
        string? what = type switch
        {
            VtdFormat.DescContextCache => g switch
            {
                1 => "context-cache invalidate: global",
                2 => string.Create(c, $"context-cache invalidate: DID {did}"),
                3 => string.Create(c, $"context-cache invalidate: DID {did} device {Rid((ushort)(q0 >> VtdFormat.DescSidShift))}{(fm != 0 ? string.Create(c, $" (function mask {fm})") : "")}"),
                _ => "context-cache invalidate: reserved granularity",
            },
            VtdFormat.DescIotlb => g switch
            {
                1 => "IOTLB invalidate: global",
                2 => string.Create(c, $"IOTLB invalidate: DID {did}"),
                // The address is a second-stage input: first-stage (and nested) entries have other tags, so all of the DID's go.
                3 => string.Create(c, $"IOTLB invalidate: DID {did} page 0x{addr:x} (AM {am}), and every first-stage entry of the DID"),
                _ => "IOTLB invalidate: reserved granularity",
            },
            VtdFormat.DescDeviceTlb => string.Create(c, $"device-TLB invalidate {Rid((ushort)(q0 >> VtdFormat.DescSidShift))}: {DeviceTlbRange(q1, VtdFormat.DevTlbSize)}"),
            VtdFormat.DescInterruptEntryCache => "interrupt-entry-cache invalidate",
            VtdFormat.DescWait => string.Create(c, $"invalidation wait{((q0 & VtdFormat.DescWaitIf) != 0 ? " IF" : "")}{((q0 & VtdFormat.DescWaitSw) != 0 ? string.Create(c, $" SW (0x{q0 >> VtdFormat.DescWaitDataShift:x} to 0x{q1 & ~3UL:x})") : "")}{((q0 & VtdFormat.DescWaitFn) != 0 ? " FN" : "")}{((q0 & VtdFormat.DescWaitPd) != 0 ? " PD" : "")}"),
            VtdFormat.DescPasidIotlb => g switch
            {
                2 => string.Create(c, $"PASID-IOTLB invalidate DID {did} PASID {pasid}: all"),
                3 => string.Create(c, $"PASID-IOTLB invalidate DID {did} PASID {pasid}: page 0x{addr:x} (AM {am})"),
                _ => string.Create(c, $"PASID-IOTLB invalidate DID {did}: reserved granularity"),
            },
            VtdFormat.DescPasidCache => g switch
            {
                0 => string.Create(c, $"PASID-cache invalidate: DID {did}"),
                1 => string.Create(c, $"PASID-cache invalidate: DID {did} PASID {pasid}"),
                3 => "PASID-cache invalidate: global",
                _ => "PASID-cache invalidate: reserved granularity",
            },
            VtdFormat.DescPasidDeviceTlb => string.Create(c, $"PASID device-TLB invalidate {Rid((ushort)(q0 >> VtdFormat.DescDidShift))} PASID {pasid}{((q1 & 1) != 0 ? " (all PASIDs)" : "")}: {DeviceTlbRange(q1, VtdFormat.PasidDevTlbSize)}"),
            VtdFormat.DescPageGroupResponse => string.Create(c, $"page group response {Rid((ushort)(q0 >> VtdFormat.PrqRidShift))}{((q0 & VtdFormat.PgrPasidPresent) != 0 ? string.Create(c, $" PASID {pasid}") : "")} group {(q1 >> VtdFormat.PrqGroupIndexShift) & 0x1FF}: {ResponseCode((int)((q0 >> VtdFormat.PgrCodeShift) & 0xF))}"),
            _ => null,
        };
        if (what is null)
        {
            return string.Create(c, $"descriptor type {type} (reserved)");
        }

        // Reserved fields, by type (bits 11:9 of q0 are the type's high bits, never reserved).
        (ulong r0, ulong r1) = type switch
        {
            1 => (0xFFFC_0000_0000_F1C0UL, ulong.MaxValue),
            2 => (0xFFFF_FFFF_0000_F100UL, 0xF80UL),
            3 => (0xFFFF_0000_FFE0_F1F0UL, 0xFFEUL),
            4 => (0xFFFF_0000_07FF_F1E0UL, ulong.MaxValue),
            5 => (0x0000_0000_FFFF_F100UL, 0x3UL),
            6 => (0xFFF0_0000_0000_F1C0UL, 0xF80UL),
            7 => (0xFFF0_0000_0000_F1C0UL, ulong.MaxValue),
            8 => (0xFFF0_0000_0000_F000UL, 0x7FEUL),
            _ => (0xFFF0_0000_0000_01E0UL, 0xFFFF_FFFF_FFFF_F003UL),
        };
        return (q0 & r0) == 0 && (q1 & r1) == 0
            ? what
            : string.Create(c, $"{what} (reserved bits set: q0 0x{q0 & r0:x}, q1 0x{q1 & r1:x})");
    }

    private static string ResponseCode(int code) => code switch
    {
        0 => "Success",
        1 => "Invalid Request",
        0xF => "Response Failure",
        _ => string.Create(CultureInfo.InvariantCulture, $"code {code} (reserved; a failure)"),
    };

    private static string DeviceTlbRange(ulong q1, ulong sizeBit) => VtdFormat.DeviceTlbRange(q1, sizeBit) switch
    {
        (_, ulong.MaxValue) => "the whole address space",
        (ulong addr, 4096) when (q1 & sizeBit) == 0 => string.Create(CultureInfo.InvariantCulture, $"page 0x{addr:x}"),
        (ulong addr, ulong size) => string.Create(CultureInfo.InvariantCulture, $"0x{addr:x} + 0x{size:x}"),
    };

    private static string Rid(ushort rid) => string.Create(CultureInfo.InvariantCulture, $"{rid >> 8:x2}:{(rid >> 3) & 0x1F:x2}.{rid & 7}");
}
