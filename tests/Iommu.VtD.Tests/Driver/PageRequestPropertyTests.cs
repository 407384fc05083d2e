using CsCheck;
using Iommu.Devices;
using Iommu.Faults;
using Iommu.Mm;
using static Iommu.VtD.Tests.Driver.IopfTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// §4 invariants 2 and 9 over random page request streams, and the feature errnos of §2.8 with pending requests.
/// </summary>
public sealed class PageRequestPropertyTests
{
    private const ulong Page = 4096;

    // Random requests (PASID of process 0, 1 or none bound; page 0–4 where 4 is outside the areas; read, write or
    // both; group index 0–3; last or not) against two processes whose four pages have random protections: every
    // group that ends with a last request gets exactly one response, SUCCESS iff every request of the group (the
    // stored ones with its index, whatever their PASID, then the last) has a bound PASID, an area and the area's
    // permission; other requests get none; after SUCCESS each request's page translates with the access it asked for.
    [Fact]
    public void Property_each_ended_group_gets_one_answer_and_success_never_exceeds_the_area()
    {
        Gen<VmProt> prot = Gen.OneOfConst(VmProt.None, VmProt.Read, VmProt.ReadWrite);
        Gen.Select(prot.Array[8], Gen.Select(Gen.Int[0, 2], Gen.Int[0, 4], Gen.Int[1, 3], Gen.Int[0, 3], Gen.Bool).Array[1, 40]).Sample((prots, reqs) =>
        {
            (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
            using DriverBed owner = f;
            ProcessAddressSpace[] mm = [new(pages, "a"), new(pages, "b")];
            var bases = new ulong[2];
            var pasid = new uint[3];
            for (int m = 0; m < 2; m++)
            {
                bases[m] = mm[m].Mmap(5 * Page);
                mm[m].Munmap(bases[m] + (4 * Page), Page);
                for (int i = 0; i < 4; i++)
                {
                    mm[m].Mprotect(bases[m] + ((ulong)i * Page), Page, prots[(m * 4) + i]);
                }

                pasid[m] = f.Iommu.SvaGetPasid(Bind(f, dev, mm[m]));
            }

            pasid[2] = Math.Max(pasid[0], pasid[1]) + 5; // bound to nothing
            var trace = new FirstLevelTestKit.QiTrace(f);
            var expected = new List<(ulong, ulong)>();
            var partial = new List<(int M, int Page, int Access, int Prgi)>();
            var granted = new List<(int M, int Page, int Access)>();
            foreach ((int m, int page, int access, int prgi, bool lpig) in reqs)
            {
                ulong va = bases[Math.Min(m, 1)] + ((ulong)page * Page);
                Assert.True(Request(f, dev, pasid[m], va, prgi, lpig, rd: (access & 1) != 0, wr: (access & 2) != 0));
                if (m == 2)
                {
                    if (lpig)
                    {
                        expected.Add((ResponseQ0(pasid[2], dev.RequesterId, 1), ResponseQ1(prgi)));
                    }

                    continue;
                }

                if (!lpig)
                {
                    partial.Add((m, page, access, prgi));
                    continue;
                }

                List<(int M, int Page, int Access, int Prgi)> group = [.. partial.Where(p => p.Prgi == prgi), (m, page, access, prgi)];
                partial.RemoveAll(p => p.Prgi == prgi);
                bool ok = group.TrueForAll(g => g.Page < 4 && Allows(prots[(g.M * 4) + g.Page], g.Access));
                expected.Add((ResponseQ0(pasid[m], dev.RequesterId, ok ? 0 : 1), ResponseQ1(prgi)));
                if (ok)
                {
                    granted.AddRange(group.Select(g => (g.M, g.Page, g.Access)));
                }
            }

            Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev));
            Assert.Equal(expected.Order(), Responses(trace).Order());
            foreach ((int m, int page, int access) in granted)
            {
                AtsCompletion c = f.Unit.TranslationRequest(dev, pasid[m], bases[m] + ((ulong)page * Page), write: (access & 2) != 0);
                Assert.True(c.Success && c.Read, $"process {m} page {page}");
                Assert.Equal((access & 2) != 0, c.Write);
            }

            foreach (ProcessAddressSpace p in mm)
            {
                p.Dispose();
            }
        }, iter: 60);

        static bool Allows(VmProt p, int access) => ((access & 1) == 0 || (p & VmProt.Read) != 0) && ((access & 2) == 0 || (p & VmProt.Write) != 0);
    }

    [Fact]
    public void Disabling_sva_with_a_request_awaiting_its_answer_is_ebusy_and_5_15_leaves_a_device_on_the_queue_when_its_handler_is_taken()
    {
        (DriverBed f, PciDevice _, HostPageAllocator pages) = Bed();
        using DriverBed owner = f;
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:07.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        Assert.True(dev.AtsEnabled && dev.PriEnabled);
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        var seen = new List<IommuFault>();
        Assert.Equal(Errno.None, f.Iommu.RegisterDeviceFaultHandler(dev, (fault, _) => { seen.Add(fault); return Errno.None; }, null));

        // iopf_queue_add_device succeeds, the handler registration fails, and 5.15 leaves the device queued.
        Assert.Equal(Errno.EBUSY, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(Errno.EBUSY, f.Iommu.IopfQueueAddDevice(f.Driver.IopfQueueOf(0)!, dev));
        Assert.Equal(Errno.EBUSY, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        EnableDteAndPre(f, dev);

        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(Page);
        uint p = f.Iommu.SvaGetPasid(Bind(f, dev, mm));
        var trace = new FirstLevelTestKit.QiTrace(f);
        Assert.True(Request(f, dev, p, va, prgi: 4, lpig: true, rd: true, wr: true));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(dev)); // the device is on the queue: this waits for the PRQ thread
        IommuFault pending = Assert.Single(seen);
        Assert.Equal(PageRequestFlags.LastPage | PageRequestFlags.PasidValid | PageRequestFlags.ResponseNeedsPasid, pending.Flags);
        Assert.Equal((p, 4u, 3u, va), (pending.Pasid, pending.GroupId, pending.Perm, pending.Address));

        Assert.Equal(Errno.EBUSY, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(Errno.EBUSY, f.Iommu.IopfQueueAddDevice(f.Driver.IopfQueueOf(0)!, dev)); // still on the queue

        // The answer goes out unchanged (generic FAILURE = RC 2, §5 item 1); then SVA can be disabled.
        Assert.Equal(Errno.None, f.Iommu.PageResponse(dev, new IommuPageResponse { Pasid = p, GroupId = 4, Code = IommuPageResponseCode.Failure, Flags = IommuPageResponse.FlagPasidValid }));
        Assert.Equal([(ResponseQ0(p, dev.RequesterId, 2), ResponseQ1(4))], Responses(trace));
        Assert.Equal(Errno.None, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(Errno.EINVAL, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueAddDevice(f.Driver.IopfQueueOf(0)!, dev));
        Assert.Equal(Errno.None, f.Iommu.IopfQueueRemoveDevice(f.Driver.IopfQueueOf(0)!, dev));
        Assert.Equal(Errno.EINVAL, f.Iommu.IopfQueueRemoveDevice(f.Driver.IopfQueueOf(0)!, dev));
        Assert.Equal(Errno.ENODEV, f.Iommu.IopfQueueFlushDev(dev));
    }
}
