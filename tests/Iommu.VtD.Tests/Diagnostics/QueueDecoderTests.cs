using CsCheck;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver.Format;

namespace Iommu.VtD.Tests.Diagnostics;

/// <summary>
/// <see cref="VtdDecoder.DescribeInvalidation"/> and <see cref="VtdDecoder.DescribePageRequest"/>: the decoder reads
/// with the hardware's field definitions, so decoding what the driver encodes checks the two readings of the spec
/// against each other; page requests are written here from the spec's layout by hand.
/// </summary>
public sealed class QueueDecoderTests
{
    public static TheoryData<ulong, ulong, string> DriverDescriptors => new()
    {
        { QiDescriptor.PasidIotlb(1, 7, QiDescriptor.GranPsiPasid), QiDescriptor.PasidIotlbAddress(0x7f00_0000_3000, false, 0), "PASID-IOTLB invalidate DID 1 PASID 7: page 0x7f0000003000 (AM 0)" },
        { QiDescriptor.PasidIotlb(2, 7, QiDescriptor.GranNonGlobalPasid), 0, "PASID-IOTLB invalidate DID 2 PASID 7: all" },
        { QiDescriptor.PasidCache(1, 7, QiDescriptor.PcPasidSel), 0, "PASID-cache invalidate: DID 1 PASID 7" },
        { QiDescriptor.PasidCache(3, 0, QiDescriptor.PcAllPasids), 0, "PASID-cache invalidate: DID 3" },
        { QiDescriptor.Iotlb(5, false, false, 3), 0x4000_0000UL | 9, "IOTLB invalidate: DID 5 page 0x40000000 (AM 9), and every first-stage entry of the DID" },
        { QiDescriptor.Iotlb(5, false, false, 2), 0, "IOTLB invalidate: DID 5" },
        { QiDescriptor.ContextCache(4, 0x0028, 0, 3), 0, "context-cache invalidate: DID 4 device 00:05.0" },
        { QiDescriptor.DevIotlb(0x0028, 0, 32), QiDescriptor.DevIotlbAddress(0x4000_0000, 0), "device-TLB invalidate 00:05.0: page 0x40000000" },
        { QiDescriptor.DevIotlb(0x0028, 0, 32), QiDescriptor.DevIotlbAddress(0x4000_0000, 4), "device-TLB invalidate 00:05.0: 0x40000000 + 0x10000" },
        { QiDescriptor.PasidDevIotlb(0x0028, 0, 7, 32), QiDescriptor.PasidDevIotlbAddress(0x7f00_0000_0000, 0), "PASID device-TLB invalidate 00:05.0 PASID 7: page 0x7f0000000000" },
        { QiDescriptor.PasidDevIotlb(0x0028, 0, 7, 32), QiDescriptor.PasidDevIotlbAddress(0x7f00_0000_8000, 3), "PASID device-TLB invalidate 00:05.0 PASID 7: 0x7f0000008000 + 0x8000" },
        { QiDescriptor.WaitWithStatus(0x11), 0x1000, "invalidation wait SW (0x11 to 0x1000)" },
    };

    [Theory]
    [MemberData(nameof(DriverDescriptors))]
    public void What_the_driver_encodes_decodes_to_the_fields_it_meant(ulong q0, ulong q1, string expected) =>
        Assert.Equal(expected, VtdDecoder.DescribeInvalidation(q0, q1));

    [Fact]
    public void A_page_group_response_reads_its_requester_pasid_group_and_code()
    {
        // Type 9 (q0 3:0), PASID present (4), response code (15:12), RID (31:16), PASID (51:32); q1 PRGI (11:3), LPIG (2).
        ulong q0 = 9UL | (1UL << 4) | (1UL << 12) | (0x0028UL << 16) | (7UL << 32);
        Assert.Equal("page group response 00:05.0 PASID 7 group 3: Invalid Request", VtdDecoder.DescribeInvalidation(q0, (3UL << 3) | 4));
        Assert.Equal("page group response 00:05.0 group 3: Success", VtdDecoder.DescribeInvalidation(q0 & ~((1UL << 4) | (0xFUL << 12)), 3UL << 3));
        Assert.EndsWith(": code 2 (reserved; a failure)", VtdDecoder.DescribeInvalidation(q0 & ~(0xFUL << 12) | (2UL << 12), 0), StringComparison.Ordinal);
    }

    [Fact]
    public void A_page_request_reads_as_the_spec_lays_it_out()
    {
        // q0: type 1 (7:0), PP (8), RID (31:16), PASID (51:32), ER (52), PM (53); q1: RD (0), WR (1), LPIG (2), PRGI (11:3), address (63:12).
        ulong q0 = 1UL | (1UL << 8) | (0x0028UL << 16) | (7UL << 32);
        Assert.Equal("page request 00:05.0 PASID 7 at 0x7f0000001000: read+write, last in group 4",
            VtdDecoder.DescribePageRequest(q0, 0x7f00_0000_1000UL | 3 | 4 | (4UL << 3)));
        Assert.Equal("page request 00:05.0 without PASID at 0x2000: read+execute+privileged, group 511",
            VtdDecoder.DescribePageRequest((q0 & ~(1UL << 8)) | (1UL << 52) | (1UL << 53), 0x2000UL | 1 | (511UL << 3)));
        Assert.Equal("page request 00:05.0 PASID 7 at 0x0: no access (stop marker), last in group 0",
            VtdDecoder.DescribePageRequest(q0, 4));
    }

    [Fact]
    public void Any_bits_decode_to_one_line_without_throwing() =>
        Gen.Select(Gen.ULong, Gen.ULong).Sample((q0, q1) =>
        {
            string inv = VtdDecoder.DescribeInvalidation(q0, q1), prq = VtdDecoder.DescribePageRequest(q0, q1);
            return inv.Length > 0 && prq.Length > 0 && !inv.Contains('\n', StringComparison.Ordinal) && !prq.Contains('\n', StringComparison.Ordinal);
        }, iter: 20_000);
}
