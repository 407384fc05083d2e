using System.Globalization;
using System.Text.RegularExpressions;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Diagnostics;

public sealed class VtdDecoderTests
{
    private const ulong Iova = 0x4000_0000, Pa = 0x1_0000_0000;

    [Fact]
    public void Every_defined_fault_reason_reads_as_its_condition_code_and_a_distinct_sentence()
    {
        VtdFaultReason[] reasons = [.. Enum.GetValues<VtdFaultReason>().Where(r => r != VtdFaultReason.None)];
        string[] texts = [.. reasons.Select(VtdDecoder.DescribeFaultReason)];

        Assert.All(texts, t => Assert.Matches(@"^(LRT|LCT|LGN|LSL|RTA|SRT|SCT|SPD|SPT|SFL|SSL|SGN)\.\d+(\.x)?: [a-zA-Z]", t));
        Assert.Equal(texts.Length, texts.Distinct(StringComparer.Ordinal).Count());
        Assert.Equal("SGN.6: write request without write permission (no second-level mapping, or W clear)",
            VtdDecoder.DescribeFaultReason(VtdFaultReason.ScalableWrite));
        Assert.StartsWith("SGN.7: read request", VtdDecoder.DescribeFaultReason((VtdFaultReason)0x86), StringComparison.Ordinal);
        Assert.StartsWith("RTA.2: request with PASID", VtdDecoder.DescribeFaultReason((VtdFaultReason)0x31), StringComparison.Ordinal);
        Assert.Equal("No fault", VtdDecoder.DescribeFaultReason(VtdFaultReason.None));
        Assert.Equal("0x20: reserved fault reason", VtdDecoder.DescribeFaultReason((VtdFaultReason)0x20));
    }

    [Fact]
    public void A_scalable_walk_names_each_structure_and_decodes_the_fields_that_steer_it()
    {
        using DriverBed f = New("Sm48");
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova, Pa, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova + M2, Pa + M2, M2, RW));
        Assert.Equal(Errno.None, f.Iommu.Map(a, Iova + K4, Pa + 0x7000, K4, IommuProt.Read));
        VtdImage image = f.Driver.ExportImage();

        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(image, parent.RequesterId, pasid, Iova);

        Assert.Equal(["root entry", "context entry (scalable)", "PASID directory entry", "PASID table entry", "PML4E", "PDPE", "PDE", "PTE"],
            walk.Select(e => e.Structure));
        Assert.All(walk, e => Assert.Equal(image.ReadUInt64(e.Address), e.Value));
        Assert.Equal("bus 0", walk[0].Index);
        Assert.Equal($"LP present, context table @0x{walk[1].Address & ~0xFFFUL:x}", walk[0].Meaning);
        Assert.Equal("devfn 0x10", walk[1].Index);
        Assert.Matches(@"^PASIDE=1 PDTS=\d RID_PASID=0, PASID dir @0x" + Hex(walk[2].Address & ~0xFFFUL) + "$", walk[1].Meaning);
        Assert.Equal($"present, PASID table @0x{walk[3].Address & ~0xFFFUL:x}", walk[2].Meaning);
        Assert.Equal(Dec(pasid & 63), walk[3].Index);
        Assert.Matches(@"^PGTT=second-level DID \d+ AW 4-level, SLPTPTR 0x" + Hex(walk[4].Address & ~0xFFFUL) + "$", walk[3].Meaning);
        Assert.Equal($"RW next table @0x{walk[5].Address & ~0xFFFUL:x}", walk[4].Meaning);
        Assert.Equal(Dec((Iova >> 12) & 0x1FF), walk[7].Index);
        Assert.Equal($"RW leaf: 4K page @0x{Pa:x}", walk[7].Meaning);

        Assert.Equal($"RW leaf: 2M page @0x{Pa + M2:x}", VtdDecoder.DescribeWalk(image, parent.RequesterId, pasid, Iova + M2 + 0x1234)[^1].Meaning);
        Assert.Equal($"R leaf: 4K page @0x{Pa + 0x7000:x}", VtdDecoder.DescribeWalk(image, parent.RequesterId, pasid, Iova + K4)[^1].Meaning);
        VtdEntryDescription hole = VtdDecoder.DescribeWalk(image, parent.RequesterId, pasid, Iova + (8 * K4))[^1];
        Assert.Equal(("PTE", "not present"), (hole.Structure, hole.Meaning));

        // Without a PASID the walk goes through RID_PASID (0): directory entry 0, PASID-table entry 0.
        IReadOnlyList<VtdEntryDescription> untagged = VtdDecoder.DescribeWalk(image, parent.RequesterId, null, Iova);
        Assert.Equal(("0", "0"), (untagged[2].Index, untagged[3].Index));
    }

    [Fact]
    public void A_legacy_walk_decodes_the_context_entry_translation_type_domain_and_width()
    {
        using DriverBed f = New("Legacy48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain d = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(d, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(d, Iova, Pa, K4, RW));

        IReadOnlyList<VtdEntryDescription> walk = VtdDecoder.DescribeWalk(f.Driver.ExportImage(), dev.RequesterId, null, Iova);

        Assert.Equal(["root entry", "context entry (legacy)", "PML4E", "PDPE", "PDE", "PTE"], walk.Select(e => e.Structure));
        Assert.Equal($"present, context table @0x{walk[1].Address & ~0xFFFUL:x}", walk[0].Meaning);
        Assert.Equal("devfn 0x18", walk[1].Index);
        Assert.Matches(@"^TT=translated DID \d+ AW 4-level, SLPTPTR 0x" + Hex(walk[2].Address & ~0xFFFUL) + "$", walk[1].Meaning);
        Assert.Equal($"RW leaf: 4K page @0x{Pa:x}", walk[^1].Meaning);
    }

    [Fact]
    public void Entry_and_pgtt_names()
    {
        Assert.Equal("PML5E", VtdDecoder.EntryName(new VtdImageEntry(VtdImageChunkKind.PageTable, 5, 0, 0)));
        Assert.Equal("PDE", VtdDecoder.EntryName(new VtdImageEntry(VtdImageChunkKind.PageTable, 2, 0, 0)));
        Assert.Equal("PASID directory entry", VtdDecoder.EntryName(new VtdImageEntry(VtdImageChunkKind.PasidDirectory, 0, 0, 0)));
        Assert.Equal("pass-through", VtdDecoder.PgttName(VtdFormat.PgttPassThrough));
        Assert.Equal("reserved (7)", VtdDecoder.PgttName(7));
    }

    private static string Hex(ulong v) => v.ToString("x", CultureInfo.InvariantCulture);

    private static string Dec(ulong v) => v.ToString(CultureInfo.InvariantCulture);
}
