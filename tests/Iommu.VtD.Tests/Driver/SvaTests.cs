using CsCheck;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// 5.15 SVA on the unit's first-level walk: the device DMAs with the mm's PASID at the process's virtual
/// addresses through the CPU's own tables; the mmu notifier keeps the IOTLB in step; exit and unbind tear down.
/// </summary>
public sealed class SvaTests
{
    private const ulong Page = 4096;

    private static DmaResult Read(PciDevice dev, uint pasid, ulong va)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.DmaRead(pasid, va, b);
    }

    private static DmaResult Write(PciDevice dev, uint pasid, ulong va)
    {
        Span<byte> b = stackalloc byte[8];
        return dev.DmaWrite(pasid, va, b, DmaRequestAttributes.None);
    }

    private static (DriverBed F, PciDevice Dev, HostPageAllocator Pages) Bed()
    {
        DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = f.AuxParent("0000:00:02.0"); // AUX sets PASIDE: SVA itself would need ATS and PRI
        return (f, dev, HostPageAllocator.ForPlatform(f.Platform));
    }

    private static IommuSva Bind(DriverBed f, PciDevice dev, ProcessAddressSpace mm)
    {
        Assert.Equal(Errno.None, f.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        return h!;
    }

    private static ulong Pa(ProcessAddressSpace mm, ulong va)
    {
        Assert.True(mm.TryTranslate(va, out ulong pfn));
        return (pfn << 12) | (va & 0xFFF);
    }

    [Fact]
    public void Bind_writes_a_first_level_entry_on_the_process_tables_and_dma_reaches_exactly_its_pages()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed _ = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(4 * Page);
        Assert.Equal(Errno.None, mm.Write(va + 8, [1, 2, 3]));
        IommuSva h = Bind(f, dev, mm);
        uint pasid = f.Iommu.SvaGetPasid(h);
        Assert.NotEqual(IommuCore.PasidInvalid, pasid);

        ulong[] e = f.PasidEntry(dev, pasid)!;
        Assert.Equal(0x49UL, e[0]); // P | AW=2 | PGTT=001
        Assert.Equal(1UL, e[1] & 0xFFFF); // FLPT_DEFAULT_DID
        Assert.Equal(mm.Pgd, e[2]); // FLPTR, no SRE/WPE/NXE/FLPM
        Assert.Equal(0UL, e[1] & ~0x80_0001UL); // DID 1 and at most PWSNP (= ECAP.SMPWCS)

        DmaResult r = Read(dev, pasid, va + 8);
        Assert.True(r.IsOk);
        Assert.Equal(Pa(mm, va + 8), r.Address);
        Assert.Equal(0x71, Read(dev, pasid, va + (4 * Page)).FaultReason.Code); // outside any mapping
        Assert.Equal(0x71, Read(dev, pasid, va + Page).FaultReason.Code); // mapped but never touched: no PTE

        // Binding again returns the same handle and rewrites nothing; one unbind keeps it.
        Assert.Equal(Errno.None, f.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? again));
        Assert.Same(h, again);
        f.Iommu.SvaUnbindDevice(again!);
        Assert.True(Read(dev, pasid, va + 8).IsOk);
        f.Iommu.SvaUnbindDevice(h);
        Assert.Equal(IommuCore.PasidInvalid, f.Iommu.SvaGetPasid(h));
        Assert.False(Read(dev, pasid, va + 8).IsOk);
        Assert.Equal(0UL, f.PasidEntry(dev, pasid)![0]);
        f.Iommu.SvaUnbindDevice(h); // stale handle: ignored

        // The PASID went back to the platform allocator (lowest free).
        Assert.Equal(pasid, f.Iommu.AllocGlobalPasid(dev));
    }

    [Fact]
    public void Read_only_and_cow_pages_refuse_device_writes_and_the_notifier_stops_a_warmed_iotlb()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed _ = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong ro = mm.Mmap(Page, VmProt.Read);
        ulong rw = mm.Mmap(2 * Page);
        Assert.Equal(Errno.None, mm.Read(ro, new byte[8]));
        Assert.Equal(Errno.None, mm.Write(rw, [1]));
        Assert.Equal(Errno.None, mm.Write(rw + Page, [1]));
        uint pasid = f.Iommu.SvaGetPasid(Bind(f, dev, mm));

        Assert.True(Read(dev, pasid, ro).IsOk);
        Assert.Equal(0x85, Write(dev, pasid, ro).FaultReason.Code);
        Assert.True(Write(dev, pasid, rw).IsOk); // warms the IOTLB

        mm.Mprotect(rw, Page, VmProt.Read);
        Assert.Equal(0x85, Write(dev, pasid, rw).FaultReason.Code);
        Assert.True(Read(dev, pasid, rw + Page).IsOk);
        mm.Munmap(rw + Page, Page);
        Assert.Equal(0x71, Read(dev, pasid, rw + Page).FaultReason.Code);

        // fork write-protects the parent (COW): device writes fault until the CPU breaks the COW.
        ulong w = mm.Mmap(Page);
        Assert.Equal(Errno.None, mm.Write(w, [7]));
        Assert.True(Write(dev, pasid, w).IsOk);
        using ProcessAddressSpace child = mm.Fork("child");
        Assert.Equal(0x85, Write(dev, pasid, w).FaultReason.Code);
        ulong before = Pa(mm, w);
        Assert.Equal(Errno.None, child.Write(w, [9])); // the child's break moves the child's page
        Assert.NotEqual(before, Pa(child, w));
        Assert.Equal(Pa(mm, w), Read(dev, pasid, w).Address);
    }

    [Fact]
    public void Two_processes_share_no_pasid_and_no_page_and_exit_silences_the_pasid()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed _ = f;
        using var a = new ProcessAddressSpace(pages, "a");
        using var b = new ProcessAddressSpace(pages, "b");
        ulong va = a.Mmap(Page);
        Assert.Equal(Errno.None, a.Write(va, [1]));
        ulong vb = b.Mmap(2 * Page);
        Assert.Equal(Errno.None, b.Write(vb + Page, [2]));
        IommuSva ha = Bind(f, dev, a);
        IommuSva hb = Bind(f, dev, b);
        uint pa = f.Iommu.SvaGetPasid(ha), pb = f.Iommu.SvaGetPasid(hb);
        Assert.NotEqual(pa, pb);
        Assert.Equal(Pa(a, va), Read(dev, pa, va).Address);
        Assert.False(Read(dev, pa, vb + Page).IsOk);
        Assert.Equal(Pa(b, vb + Page), Read(dev, pb, vb + Page).Address);

        a.Exit();
        DmaResult r = Read(dev, pa, va);
        Assert.False(r.IsOk);
        Assert.Equal(Pa(b, vb + Page), Read(dev, pb, vb + Page).Address); // b unaffected
        ulong[] e = f.PasidEntry(dev, pa)!;
        Assert.Equal(0x2UL, e[0]); // FPD, not present: faults stay suppressed
        Assert.Equal(pa, f.Iommu.SvaGetPasid(ha)); // the bind lives until its unbind
        f.Iommu.SvaUnbindDevice(ha);
        Assert.Equal(0x2UL, f.PasidEntry(dev, pa)![0]);
    }

    [Fact]
    public void Bind_and_feature_errnos_leave_state_unchanged()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
        using DriverBed _ = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        PciDevice noPasid = f.AddDevice("0000:00:04.0");
        Assert.Equal(Errno.EINVAL, f.Iommu.SvaBindDevice(noPasid, mm, null, out IommuSva? h));
        Assert.Null(h);
        using var gone = new ProcessAddressSpace(pages, "gone");
        gone.Exit();
        Assert.Equal(Errno.EINVAL, f.Iommu.SvaBindDevice(dev, gone, null, out h));
        Assert.Null(h);
        Assert.Equal(1u, f.Iommu.AllocGlobalPasid(dev)); // no PASID leaked by the failures
        f.Iommu.FreeGlobalPasid(1);

        Assert.Equal(Errno.ENODEV, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf)); // no PRI
        Assert.Equal(Errno.EINVAL, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva)); // ATS/PRI off
        Assert.Equal(Errno.EINVAL, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        Assert.Equal(Errno.None, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Iopf));
        Assert.False(f.Iommu.DevFeatureEnabled(dev, IommuDevFeature.Sva));

        PciDevice full = f.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        Assert.Equal(Errno.ENODEV, f.Iommu.DevEnableFeature(full, IommuDevFeature.Iopf)); // PRI, but the unit has no ECAP.DT/PRS: no pri_supported
        Assert.Equal(Errno.EINVAL, f.Iommu.DevEnableFeature(full, IommuDevFeature.Sva));
        // ATS and PRI switched on at the device by someone other than the driver: 5.15 intel_iommu_enable_sva reads
        // info->ats_enabled/pri_enabled, which only the driver sets (and only with ECAP.DT/PRS): still -EINVAL.
        Assert.Equal(Errno.None, full.EnableAts());
        Assert.Equal(Errno.None, full.EnablePri());
        Assert.Equal(Errno.EINVAL, f.Iommu.DevEnableFeature(full, IommuDevFeature.Sva));
        Assert.False(f.Iommu.DevFeatureEnabled(full, IommuDevFeature.Sva));
        Assert.Equal(Errno.ENODEV, f.Iommu.DevEnableFeature(full, (IommuDevFeature)7));
    }

    // §4 invariants 1 and 3: over random mmap'd pages, CPU writes, munmap, mprotect, fork (COW) and exit of
    // two processes bound to one device, a DMA with a process's PASID succeeds iff that process's CPU
    // tables allow it at that moment (present, user, writable for writes) and reaches exactly that page —
    // IOTLB entries warmed by earlier DMA never outlive the notifier's flush.
    [Fact]
    public void Property_device_dma_with_a_pasid_follows_the_cpu_tables_of_its_process()
    {
        Gen.Select(Gen.Int[0, 6], Gen.Int[0, 1], Gen.Int[0, 3], Gen.Bool).Array[1, 60].Sample(ops =>
        {
            (DriverBed f, PciDevice dev, HostPageAllocator pages) = Bed();
            using DriverBed bed = f;
            ProcessAddressSpace[] mm = [new(pages, "a"), new(pages, "b")];
            ulong[] bases = new ulong[2];
            bool[][] mapped = [new bool[8], new bool[8]];
            uint[] pasid = new uint[2];
            for (int p = 0; p < 2; p++)
            {
                bases[p] = mm[p].Mmap(8 * Page);
                Array.Fill(mapped[p], true);
                pasid[p] = f.Iommu.SvaGetPasid(Bind(f, dev, mm[p]));
            }

            Assert.NotEqual(pasid[0], pasid[1]);
            foreach ((int op, int p, int i, bool flag) in ops)
            {
                ulong va = bases[p] + ((ulong)i * Page);
                bool live = !mm[p].Exited;
                switch (op)
                {
                    case 0 when live:
                        _ = mm[p].Write(va, [(byte)i]);
                        break;
                    case 1 when live && mapped[p][i]:
                        mm[p].Munmap(va, Page);
                        mapped[p][i] = false;
                        break;
                    case 2 when live && mapped[p][i]:
                        mm[p].Mprotect(va, Page, flag ? VmProt.ReadWrite : VmProt.Read);
                        break;
                    case 3 when live:
                        using (ProcessAddressSpace child = mm[p].Fork())
                        {
                            if (flag)
                            {
                                _ = child.Write(va, [1]);
                            }
                        }

                        break;
                    case 4 or 5:
                        bool write = op == 5;
                        DmaResult r = write ? Write(dev, pasid[p], va) : Read(dev, pasid[p], va);
                        if (!live)
                        {
                            Assert.False(r.IsOk);
                            break;
                        }

                        X86PageWalk w = mm[p].Walk(va);
                        bool allowed = w.Present && w.User && (!write || w.Writable);
                        Assert.Equal(allowed, r.IsOk);
                        if (allowed)
                        {
                            Assert.Equal(w.PhysicalAddress, r.Address);
                        }

                        break;
                    case 6 when live && flag:
                        mm[p].Exit();
                        break;
                }
            }

            foreach (ProcessAddressSpace m in mm)
            {
                m.Dispose();
            }
        }, iter: 100);
    }
}
