using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// 5.15 intel-iommu never writes a write-only second-level leaf: since "iommu/vt-d: Remove WO
/// permissions on second-level paging entries" (eea53c581688, 5.12, in 5.10 stable and 5.15)
/// <c>__domain_mapping</c> sets <c>DMA_FL_PTE_PRESENT</c>, bit 0 = <c>DMA_PTE_READ</c>, on every entry.
/// A real 6.1 guest's tables show the same (kernel trace README #23).
/// </summary>
public sealed class WriteOnlyMapTests
{
    /// <summary>The leaf entry that translates <paramref name="iova"/>, read from the table memory itself.</summary>
    private static (ulong Pte, int Level) LeafPte(DriverBed f, IDomain dom, ulong iova)
    {
        DmaPageTable pt = ((DmarDomain)dom).PageTable;
        ulong table = pt.Root;
        for (int level = pt.Levels; ; level--)
        {
            ulong pte = f.Platform.Memory.ReadUInt64(table + ((ulong)DmaPte.Index(iova, level) * 8));
            if (level == 1 || (pte & DmaPte.LargePage) != 0 || (pte & (DmaPte.Read | DmaPte.Write)) == 0)
            {
                return (pte, level);
            }

            table = pte & DmaPte.AddressMask;
        }
    }

    [Theory]
    [InlineData("Legacy39", K4)]
    [InlineData("Legacy48", M2)]
    [InlineData("Sm48", K4)]
    [InlineData("Sm57", M2)]
    public void Iommu_map_with_write_only_writes_a_read_write_leaf_and_the_device_can_read_through_it(string config, ulong size)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        const ulong iova = 0x4000_0000, pa = 0x8000_0000;

        Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, pa, size, IommuProt.Write));

        (ulong pte, int level) = LeafPte(f, dom, iova);
        Assert.Equal(size == M2 ? 2 : 1, level);
        Assert.Equal(pa, pte & DmaPte.AddressMask);
        Assert.Equal(DmaPte.Read | DmaPte.Write, pte & (DmaPte.Read | DmaPte.Write)); // the old driver wrote W only

        f.Platform.Memory.WriteUInt64(pa + 0x18, 0x0123_4567_89ab_cdef);
        Span<byte> buf = stackalloc byte[8];
        DmaResult read = dev.DmaRead(null, iova + 0x18, buf);
        Assert.True(read.IsOk, read.ToString());
        Assert.Equal(0x0123_4567_89ab_cdefUL, BitConverter.ToUInt64(buf));
        Assert.True(f.Write(dev, null, iova + 0x20, 7).IsOk);
        Assert.Equal(7UL, f.Platform.Memory.ReadUInt64(pa + 0x20));
    }

    [Fact]
    public void Read_only_stays_read_only_and_a_map_without_read_or_write_is_still_einval()
    {
        using DriverBed f = New("Legacy48");
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));

        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x20_0000, K4, IommuProt.Read));
        Assert.Equal(DmaPte.Read, LeafPte(f, dom, 0x10_0000).Pte & (DmaPte.Read | DmaPte.Write));
        Assert.Equal(DmaStatus.Fault, f.Write(dev, null, 0x10_0000, 1).Status);

        // The read bit is added only to a request that has read or write: CACHE alone is -EINVAL.
        Assert.Equal(Errno.EINVAL, f.Iommu.Map(dom, 0x30_0000, 0x30_0000, K4, IommuProt.Cache));
        Assert.Equal(Errno.EINVAL, f.Driver.MapPages(dom, 0x30_0000, 0x30_0000, K4, 1, IommuProt.None, out ulong mapped));
        Assert.Equal(0UL, mapped);
        Assert.Equal(0UL, LeafPte(f, dom, 0x30_0000).Pte & (DmaPte.Read | DmaPte.Write));
    }
}
