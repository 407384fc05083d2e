using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>fail_nth over first-level table allocation: every injected failure is -ENOMEM (or the attach path's errno) and leaves nothing behind.</summary>
public sealed class FirstLevelFailNthTests
{
    [Theory]
    [InlineData("Fl48")]
    [InlineData("Fl57")]
    public void A_failed_table_allocation_during_a_first_level_map_is_enomem_and_leaves_nothing(string config)
    {
        using DriverBed f = NewFl(config, FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        long baseline = f.Platform.Frames.LiveFrames;
        int failures = 0;
        for (int n = 1; n <= 8; n++)
        {
            IDomain dom = f.Unmanaged();
            Assert.True(((DmarDomain)dom).UseFirstLevel);
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            const ulong iova = 0x3F_FFE0_0000, size = 8 * Sizes.MiB;
            f.Platform.Frames.FailNth(n);
            Errno err = f.Iommu.Map(dom, iova, 0x1000, size, RW);
            bool fired = !f.Platform.Frames.FailurePending;
            f.Platform.Frames.FailNth(0);
            if (fired)
            {
                failures++;
                Assert.Equal(Errno.ENOMEM, err);
                for (ulong off = 0; off < size; off += K4)
                {
                    Assert.Equal(0UL, f.Iommu.IovaToPhys(dom, iova + off));
                }
            }
            else
            {
                Assert.Equal(Errno.None, err);
                Assert.Equal(0x1000 + size - 8, f.Iommu.IovaToPhys(dom, iova + size - 8));
            }

            f.Iommu.DetachDevice(dom, dev);
            f.Iommu.DomainFree(dom);
            Assert.Equal(baseline, f.Platform.Frames.LiveFrames);
        }

        Assert.True(failures >= 4, $"only {failures} injected failures hit the map");
    }

    [Fact]
    public void A_failed_allocation_during_a_first_level_aux_attach_changes_nothing()
    {
        using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain filler = f.Unmanaged();
        int failures = 0;
        for (int n = 1; n <= 4; n++)
        {
            // PASID 64 needs a new PASID table: fill 1..63 first.
            var fillers = new List<IDomain>();
            for (int i = 0; i < 63; i++)
            {
                IDomain x = f.Unmanaged();
                Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(x, parent));
                fillers.Add(x);
            }

            IDomain dom = f.Unmanaged();
            long frames = f.Platform.Frames.LiveFrames;
            int dids = f.Driver.Units[0].DomainIdsInUse;
            f.Platform.Frames.FailNth(n);
            Errno err = f.Iommu.AttachDeviceAux(dom, parent);
            bool fired = !f.Platform.Frames.FailurePending;
            f.Platform.Frames.FailNth(0);
            if (fired)
            {
                failures++;
                Assert.Equal(Errno.EINVAL, err); // 5.15 first-level lookup failure (a PASID-table page it could not allocate)
                Assert.Equal(0u, ((DmarDomain)dom).DefaultPasid);
                Assert.Equal(frames, f.Platform.Frames.LiveFrames);
                Assert.Equal(dids, f.Driver.Units[0].DomainIdsInUse);
                Assert.Equal(63, f.Driver.PasidsInUse);
            }
            else
            {
                Assert.Equal(Errno.None, err);
                Assert.Equal(64u, ((DmarDomain)dom).DefaultPasid);
                Assert.Equal(0x49UL, f.PasidEntry(parent, 64)![0]);
                f.Iommu.DetachDeviceAux(dom, parent);
            }

            foreach (IDomain x in fillers)
            {
                f.Iommu.DetachDeviceAux(x, parent);
                f.Iommu.DomainFree(x);
            }

            f.Iommu.DomainFree(dom);
        }

        Assert.True(failures >= 1, "no injected failure hit the attach");
        GC.KeepAlive(filler);
    }
}
