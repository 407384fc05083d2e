using CsCheck;
using Iommu;
using Iommu.Devices;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// The container's mappings (<c>iommu->dma_list</c>) over random orders and sizes of MAP_DMA and
/// UNMAP_DMA (v2): the list always equals a model's, an overlap is EEXIST, an unmap that bisects a
/// mapping is EINVAL and removes nothing, an unmap removes exactly the mappings inside it and reports
/// their bytes, every mapping translates in the IOMMU domain, and the backend's audit (its tree
/// included) holds. Thousands of mappings at once keep the tree deep.
/// </summary>
public sealed class MappingTreePropertyTests
{
    private const ulong P = Sizes.Page;
    private const ulong Space = 0x4000_0000;  // IOVAs in [Space, Space + 512 pages)
    private const int Slots = 512;

    [Fact]
    public void Random_maps_and_unmaps_keep_the_list_the_errnos_and_the_translations_of_a_model()
    {
        // (kind, first slot, pages): kind 0-5 map, 6-9 unmap.
        Gen.Select(Gen.Int[0, 9], Gen.Int[0, Slots - 1], Gen.Int[1, 8]).Array[1, 120]
            .Sample(ops =>
            {
                using var bed = new Type1Bed();
                PciDevice dev = bed.AddDevice("0000:00:03.0");
                (VfioContainer c, _) = bed.Std(dev);
                ulong buffer = bed.Buffer(Slots * P);
                var model = new SortedDictionary<ulong, ulong>(); // iova -> size
                foreach ((int kind, int slot, int pages) in ops)
                {
                    ulong iova = Space + ((ulong)slot * P);
                    ulong size = (ulong)Math.Min(pages, Slots - slot) * P;
                    if (kind < 6)
                    {
                        bool overlaps = model.Any(m => m.Key < iova + size && iova < m.Key + m.Value);
                        Errno e = c.MapDma(Type1Bed.Map(buffer + ((ulong)slot * P), iova, size));
                        Assert.Equal(overlaps ? Errno.EEXIST : Errno.None, e);
                        if (!overlaps)
                        {
                            model.Add(iova, size);
                        }
                    }
                    else
                    {
                        bool bisects = model.Any(m => (m.Key < iova && iova < m.Key + m.Value) || (m.Key < iova + size && iova + size < m.Key + m.Value));
                        var inside = model.Where(m => m.Key >= iova && m.Key + m.Value <= iova + size).ToList();
                        var unmap = new VfioIommuType1DmaUnmap(24, 0, iova, size);
                        Errno e = c.UnmapDma(ref unmap);
                        Assert.Equal(bisects ? Errno.EINVAL : Errno.None, e);
                        if (!bisects)
                        {
                            Assert.Equal((ulong)inside.Sum(m => (long)m.Value), unmap.Size);
                            inside.ForEach(m => model.Remove(m.Key));
                        }
                    }
                }

                Assert.Equal(model.Select(m => (m.Key, m.Value)), c.Backend!.Mappings.Select(d => (d.Iova, d.Size)));
                c.Backend.Audit();
                // Every page of the space translates exactly when a mapping covers it.
                var domain = bed.Iommu.GetDomainForDev(dev)!;
                for (int slot = 0; slot < Slots; slot++)
                {
                    ulong iova = Space + ((ulong)slot * P);
                    bool covered = model.Any(m => m.Key <= iova && iova < m.Key + m.Value);
                    Assert.Equal(covered, bed.Iommu.IovaToPhys(domain, iova) != 0);
                }
            }, iter: 60);
    }

    [Fact]
    public void Thousands_of_mappings_unmapped_in_random_order_leave_nothing_behind()
    {
        const int N = 6000;
        using var bed = new Type1Bed();
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        (VfioContainer c, _) = bed.Std(dev);
        ulong buffer = bed.Proc.Mmap(N * P);
        var rng = new Random(7);
        int[] order = [.. Enumerable.Range(0, N).OrderBy(_ => rng.Next())];
        foreach (int i in order)
        {
            Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buffer + ((ulong)i * P), Space + ((ulong)i * 2 * P), P)));
        }

        Assert.Equal(N, c.Backend!.Mappings.Count);
        c.Backend.Audit();
        foreach (int i in order.Reverse())
        {
            var unmap = new VfioIommuType1DmaUnmap(24, 0, Space + ((ulong)i * 2 * P), P);
            Assert.Equal(Errno.None, c.UnmapDma(ref unmap));
            Assert.Equal(P, unmap.Size);
            if (i % 1000 == 0)
            {
                c.Backend.Audit();
            }
        }

        Assert.Empty(c.Backend.Mappings);
        c.Backend.Audit();
    }
}
