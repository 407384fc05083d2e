using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// ATS on the driver side (5.15, pasid-sva.md §1.2, §1.7, §2.4, §2.5.4, §4 inv 3): what an ATS device sees
/// after attach (its PASID/PRI/ATS enabled, DTE/PRE in the context entry's bytes), the device-TLB descriptors
/// as the unit reads them from the queue, and that a translation warmed into the device's ATC never serves a
/// page after iommu_unmap or the mm change returns.
/// </summary>
public sealed class AtsDriverTests
{
    private const int DescDevTlb = 3, DescPasidDevTlb = 8;
    private const ulong Dte = 1UL << 2, Pre = 1UL << 4;

    private static readonly VtdConfig AtsConfig = VtdConfig.ScalableModeSva48Bit;

    private static DriverBed Bed(FirstLevelPolicy policy = FirstLevelPolicy.FirstLevelByDefault) => NewFl(AtsConfig, policy);

    private static PciDevice AtsDevice(DriverBed f, string bdf, bool pri = true, bool siov = false, bool ats = true) =>
        f.Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = ats, Pri = pri, ScalableIov = siov, Acs = true });

    private static ulong ContextQ0(DriverBed f, PciDevice dev)
    {
        ulong root = f.Unit.Read64(0x20) & ~0xFFFUL;
        ulong re = f.Platform.Memory.ReadUInt64(root + (dev.BusNumber * 16UL) + (dev.DevFn >= 128 ? 8UL : 0));
        return f.Platform.Memory.ReadUInt64((re & ~0xFFFUL) + ((dev.DevFn & 0x7FUL) * 32));
    }

    private static ushort Sid(PciDevice dev) => (ushort)((dev.BusNumber << 8) | dev.DevFn);

    private static ulong DevTlbQ0(PciDevice dev) => DescDevTlb | ((ulong)Sid(dev) << 32);

    private static ulong PasidDevTlbQ0(PciDevice dev, uint pasid) => DescPasidDevTlb | ((ulong)Sid(dev) << 16) | ((ulong)pasid << 32);

    private static (DmaResult R, byte[] Bytes) AtsRead(PciDevice dev, uint? pasid, ulong iova)
    {
        byte[] b = new byte[8];
        DmaResult r = dev.AtsDmaRead(pasid, iova, b);
        return (r, b);
    }

    private static void Poke(DriverBed f, ulong pa, ulong value) => f.Platform.Memory.WriteUInt64(pa, value);

    // An ATS device with an aux domain mapping 0x30_0000 -> 0x40_0000, read once through its PASID so its ATC holds it.
    private static (PciDevice Dev, IDomain Aux, uint Pasid) AuxWithWarmAtc(DriverBed f)
    {
        PciDevice dev = AtsDevice(f, "0000:00:03.0", siov: true);
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        IDomain aux = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(aux, dev));
        uint pasid = (uint)f.Iommu.AuxGetPasid(aux, dev);
        Poke(f, 0x40_0000, 0xA0);
        Assert.Equal(Errno.None, f.Iommu.Map(aux, 0x30_0000, 0x40_0000, K4, RW));
        Assert.True(AtsRead(dev, pasid, 0x30_0000).R.IsOk);
        Assert.Equal(1, dev.AtcCount);
        return (dev, aux, pasid);
    }

    [Fact]
    public void Attach_enables_pasid_pri_and_ats_and_the_context_entry_carries_dte_and_pre()
    {
        using DriverBed f = Bed();
        PciDevice full = AtsDevice(f, "0000:00:03.0");
        PciDevice atsOnly = AtsDevice(f, "0000:00:04.0", pri: false);
        PciDevice plain = f.AddDevice("0000:00:05.0", pasidWidth: 20);
        PciDevice priNoAts = AtsDevice(f, "0000:00:06.0", ats: false);

        Assert.True(full.PasidEnabled && full.PriEnabled && full.AtsEnabled);
        Assert.True(atsOnly.AtsEnabled && !atsOnly.PriEnabled);
        Assert.False(plain.AtsEnabled || plain.PriEnabled);
        Assert.False(priNoAts.AtsEnabled || priNoAts.PriEnabled); // pri_supported needs ats_supported

        // Same PASID width, so the same PDTS: the entries differ only in DTE (bit 2) and PRE (bit 4).
        ulong basis = ContextQ0(f, plain) & 0xFFF;
        Assert.Equal(0x1UL, basis & 0x1F); // P only: no DTE, PASIDE or PRE without ATS
        Assert.Equal(basis | Dte | Pre, ContextQ0(f, full) & 0xFFF);
        Assert.Equal(basis | Dte, ContextQ0(f, atsOnly) & 0xFFF);
        Assert.Equal(basis, ContextQ0(f, priNoAts) & 0xFFF);
    }

    [Fact]
    public void A_unit_without_ecap_dt_enables_nothing_and_sets_no_context_bits()
    {
        using DriverBed f = NewFl("Fl48");
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        Assert.False(dev.AtsEnabled || dev.PriEnabled);
        Assert.Equal(0UL, ContextQ0(f, dev) & (Dte | Pre));
    }

    [Fact]
    public void A_legacy_unit_leaves_translation_type_multi_level_for_an_ats_device()
    {
        // The model's legacy presets have no ECAP.DT (device-TLBs need scalable mode there), so TT stays 00.
        using DriverBed f = New("Legacy48");
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        Assert.False(dev.AtsEnabled);
        ulong root = f.Unit.Read64(0x20) & ~0xFFFUL;
        ulong re = f.Platform.Memory.ReadUInt64(root + (dev.BusNumber * 16UL));
        ulong c0 = f.Platform.Memory.ReadUInt64((re & ~0xFFFUL) + (dev.DevFn * 16UL));
        Assert.Equal(0UL, (c0 >> 2) & 3);
    }

    [Fact]
    public void Unmap_on_a_second_level_domain_sends_the_iotlb_then_the_device_tlb_descriptor()
    {
        using DriverBed f = Bed();
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.False(((DmarDomain)dom).UseFirstLevel);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x40_0000, 8 * K4, RW));
        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x10_3000, K4));
        List<(int Type, ulong Q0, ulong Q1)> d = qi.Since();
        Assert.Equal(2, d.Count);
        Assert.Equal(DescIotlb, d[0].Type);
        Assert.Equal((DescDevTlb, DevTlbQ0(dev), 0x10_3000UL), d[1]); // one page: S = 0, qdep 32 sent as 0

        // Three pages 0x104..0x106: the 4-page block at 0x104, S = 1 with bit 12 set and bit 13 clear (16 KiB).
        Assert.Equal(3 * K4, f.Iommu.Unmap(dom, 0x10_4000, 3 * K4));
        d = qi.Since();
        Assert.Equal((DescDevTlb, DevTlbQ0(dev), 0x10_5001UL), d[^1]);

        // flush_iotlb_all: the whole space (MAX_AGAW_PFN_WIDTH).
        f.Iommu.FlushIotlbAll(dom);
        Assert.Equal((DescDevTlb, DevTlbQ0(dev), 0x7FFF_FFFF_FFFF_F001UL), qi.Since()[^1]);
    }

    [Fact]
    public void With_caching_mode_tear_down_and_flush_all_send_no_device_tlb_but_unmap_does()
    {
        // 5.15: devtlb_invalidation_with_pasid and intel_flush_iotlb_all skip the device-TLB when CAP.CM = 1;
        // iommu_flush_iotlb_psi skips it only for maps.
        using DriverBed f = NewFl(AtsConfig with { CachingMode = true });
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        var qi = new QiTrace(f);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x40_0000, K4, RW));
        Assert.DoesNotContain(qi.Since(), e => e.Type == DescDevTlb);
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x10_0000, K4));
        Assert.Equal((DescDevTlb, DevTlbQ0(dev), 0x10_0000UL), qi.Since()[^1]);
        f.Iommu.FlushIotlbAll(dom);
        f.Iommu.DetachDevice(dom, dev);
        Assert.DoesNotContain(qi.Since(), e => e.Type == DescDevTlb);
    }

    // The other half: with no device-TLB descriptor from the driver, the caching-mode unit (a virtual IOMMU) does its
    // host's part and drops what the PASID tear-down's PASID-cache and IOTLB invalidations name from the ATCs, so an
    // aux domain's page is gone from the device once the aux detach returns (its translation was still served before).
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void With_caching_mode_an_aux_detach_leaves_no_translation_in_the_device_atc(bool firstLevel)
    {
        using DriverBed f = NewFl(AtsConfig with { CachingMode = true }, firstLevel ? FirstLevelPolicy.AllWhenEveryUnitHasFlts : FirstLevelPolicy.FirstLevelByDefault);
        (PciDevice dev, IDomain aux, uint pasid) = AuxWithWarmAtc(f);

        var qi = new QiTrace(f);
        f.Iommu.DetachDeviceAux(aux, dev);
        Assert.DoesNotContain(qi.Since(), e => e.Type is DescDevTlb or DescPasidDevTlb); // 5.15 leaves it to the host
        Assert.Equal(0, dev.AtcCount);
        Assert.False(AtsRead(dev, pasid, 0x30_0000).R.IsOk);
    }

    // A learned device that was hot-removed stays in the caching-mode unit's list until another device object takes its
    // requester id: the invalidations that walk the list must not trip over it, and the new device is the one reached.
    [Fact]
    public void With_caching_mode_a_removed_ats_device_does_not_stop_invalidations_and_its_successor_is_flushed()
    {
        using DriverBed f = NewFl(AtsConfig with { CachingMode = true });
        PciDevice gone = AtsDevice(f, "0000:00:03.0");
        PciDevice other = AtsDevice(f, "0000:00:04.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, gone));
        Poke(f, 0x40_0000, 0xA1);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x30_0000, 0x40_0000, K4, RW));
        Assert.True(AtsRead(gone, null, 0x30_0000).R.IsOk);
        f.Pci.RemoveDevice(gone);

        IDomain dom2 = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom2, other));
        Assert.Equal(Errno.None, f.Iommu.Map(dom2, 0x30_0000, 0x40_0000, K4, RW));
        Assert.Equal(K4, f.Iommu.Unmap(dom2, 0x30_0000, K4));
        f.Iommu.FlushIotlbAll(dom2);

        PciDevice successor = AtsDevice(f, "0000:00:03.0");
        IDomain dom3 = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom3, successor));
        Assert.Equal(Errno.None, f.Iommu.Map(dom3, 0x50_0000, 0x40_0000, K4, RW));
        Assert.True(AtsRead(successor, null, 0x50_0000).R.IsOk);
        f.Iommu.DetachDevice(dom3, successor);
        Assert.Equal(0, successor.AtcCount);
    }

    [Fact]
    public void A_device_without_ats_sees_exactly_the_descriptors_it_saw_before()
    {
        using DriverBed f = Bed();
        PciDevice dev = f.AddDevice("0000:00:03.0", pasidWidth: 20);
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x40_0000, K4, RW));
        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(dom, 0x10_0000, K4));
        f.Iommu.FlushIotlbAll(dom);
        f.Iommu.DetachDevice(dom, dev);
        Assert.DoesNotContain(qi.Since(), e => e.Type is DescDevTlb or DescPasidDevTlb);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_warmed_atc_never_serves_a_page_after_unmap_returns(bool firstLevel)
    {
        using DriverBed f = Bed(firstLevel ? FirstLevelPolicy.AllWhenEveryUnitHasFlts : FirstLevelPolicy.FirstLevelByDefault);
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(firstLevel, ((DmarDomain)dom).UseFirstLevel);
        const ulong iova = 0x20_0000, oldPa = 0x40_0000, newPa = 0x50_0000;
        Poke(f, oldPa, 0x0_1D);
        Poke(f, newPa, 0x2E_11);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, oldPa, K4, RW));
        (DmaResult r, byte[] b) = AtsRead(dev, null, iova);
        Assert.True(r.IsOk);
        Assert.Equal(0x0_1DUL, BitConverter.ToUInt64(b));
        Assert.Equal(1, dev.AtcCount);

        Assert.Equal(K4, f.Iommu.Unmap(dom, iova, K4));
        Assert.Equal(0, dev.AtcCount);
        Assert.False(AtsRead(dev, null, iova).R.IsOk);

        Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, newPa, K4, RW));
        (r, b) = AtsRead(dev, null, iova);
        Assert.True(r.IsOk);
        Assert.Equal(0x2E_11UL, BitConverter.ToUInt64(b));
    }

    [Fact]
    public void An_aux_domain_unmap_drops_the_translation_its_pasid_warmed()
    {
        using DriverBed f = Bed();
        (PciDevice dev, IDomain aux, uint pasid) = AuxWithWarmAtc(f);
        var qi = new QiTrace(f);
        Assert.Equal(K4, f.Iommu.Unmap(aux, 0x30_0000, K4));
        Assert.Contains((DescDevTlb, DevTlbQ0(dev), 0x30_0000UL), qi.Since());
        Assert.Equal(0, dev.AtcCount);
        Assert.False(AtsRead(dev, pasid, 0x30_0000).R.IsOk);

        // Aux detach tears the PASID entry down: the PASID-based descriptor over the whole space (§2.4 step 7).
        f.Iommu.DetachDeviceAux(aux, dev);
        Assert.Contains((DescPasidDevTlb, PasidDevTlbQ0(dev, pasid), 0x7FFF_FFFF_FFFF_F800UL), qi.Since());
    }

    [Fact]
    public void Detach_and_removal_disable_ats_and_empty_the_atc()
    {
        using DriverBed f = Bed();
        PciDevice dev = AtsDevice(f, "0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x20_0000, 0x40_0000, K4, RW));
        Assert.True(AtsRead(dev, null, 0x20_0000).R.IsOk);
        var qi = new QiTrace(f);
        f.Iommu.DetachDevice(dom, dev); // back to the default domain: disabled, then enabled again
        List<(int Type, ulong Q0, ulong Q1)> d = qi.Since();
        Assert.Contains((DescDevTlb, DevTlbQ0(dev), 0x7FFF_FFFF_FFFF_F001UL), d); // RID2PASID tear-down
        Assert.Equal(0, dev.AtcCount);
        Assert.True(dev.AtsEnabled);

        f.Pci.RemoveDevice(dev);
        Assert.False(dev.AtsEnabled || dev.PriEnabled || dev.PasidEnabled);
    }

    private static (DriverBed F, PciDevice Dev, HostPageAllocator Pages) SvaBed()
    {
        DriverBed f = Bed();
        PciDevice dev = AtsDevice(f, "0000:00:02.0");
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        return (f, dev, HostPageAllocator.ForPlatform(f.Platform));
    }

    private static uint Bind(DriverBed f, PciDevice dev, ProcessAddressSpace mm)
    {
        Assert.Equal(Errno.None, f.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        return f.Iommu.SvaGetPasid(h!);
    }

    [Fact]
    public void Sva_munmap_sends_a_pasid_device_tlb_after_each_p_iotlb_and_the_atc_forgets_the_page()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = SvaBed();
        using DriverBed _ = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(8 * K4);
        for (ulong i = 0; i < 8; i++)
        {
            Assert.Equal(Errno.None, mm.Write(va + (i * K4), [(byte)(i + 1)]));
        }

        uint pasid = Bind(f, dev, mm);
        (DmaResult r, byte[] b) = AtsRead(dev, pasid, va + (2 * K4));
        Assert.True(r.IsOk);
        Assert.Equal(3, b[0]);
        Assert.True(AtsRead(dev, pasid, va + (3 * K4)).R.IsOk);
        Assert.Equal(2, dev.AtcCount);

        var qi = new QiTrace(f);
        mm.Munmap(va + (2 * K4), 2 * K4);
        List<(int Type, ulong Q0, ulong Q1)> d = qi.Since();
        int p = d.FindIndex(e => e.Type == DescPiotlb);
        Assert.True(p >= 0);
        Assert.Equal((DescPasidDevTlb, PasidDevTlbQ0(dev, pasid), ((d[p].Q1 & ~0xFFFUL) | 0x800)), d[p + 1]); // 8 KiB: bit 12 clear, S set
        Assert.Equal(0, dev.AtcCount);
        Assert.False(AtsRead(dev, pasid, va + (2 * K4)).R.IsOk);
    }

    [Fact]
    public void Sva_mprotect_and_cow_break_leave_no_stale_atc_entry()
    {
        (DriverBed f, PciDevice dev, HostPageAllocator pages) = SvaBed();
        using DriverBed _ = f;
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(2 * K4);
        Assert.Equal(Errno.None, mm.Write(va, [7]));
        Assert.Equal(Errno.None, mm.Write(va + K4, [8]));
        uint pasid = Bind(f, dev, mm);

        Assert.True(dev.AtsDmaWrite(pasid, va, [9]).IsOk);
        mm.Mprotect(va, K4, VmProt.Read);
        Assert.False(dev.AtsDmaWrite(pasid, va, [10]).IsOk); // the RW translation is gone
        byte[] one = new byte[1];
        Assert.Equal(Errno.None, mm.Read(va, one));
        Assert.Equal(9, one[0]);

        // COW: the parent's write after fork gets a new page; the device must see it, not the shared old one.
        Assert.True(AtsRead(dev, pasid, va + K4).R.IsOk);
        using ProcessAddressSpace child = mm.Fork("c");
        Assert.Equal(Errno.None, mm.Write(va + K4, [42]));
        (DmaResult r, byte[] b) = AtsRead(dev, pasid, va + K4);
        Assert.True(r.IsOk);
        Assert.Equal(42, b[0]);
        Assert.Equal(Errno.None, child.Read(va + K4, one));
        Assert.Equal(8, one[0]);
    }

    // §4 inv 3 on a DMA domain: random map/unmap/ATS-DMA; every successful ATS read returns the bytes of the
    // page the domain maps at that moment (never a page unmapped earlier), and unmapped IOVAs never succeed.
    [Fact]
    public void Property_no_atc_entry_outlives_the_unmap_on_a_dma_domain()
    {
        Gen.Select(Gen.Int[0, 2], Gen.Int[0, 7], Gen.Int[0, 3]).Array[1, 40].Sample(ops =>
        {
            using DriverBed f = Bed();
            PciDevice dev = AtsDevice(f, "0000:00:03.0");
            IDomain dom = f.Unmanaged();
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            const ulong iovaBase = 0x100_0000, paBase = 0x200_0000;
            var map = new int?[8];
            for (int frame = 0; frame < 4; frame++)
            {
                Poke(f, paBase + ((ulong)frame * K4), 0xF00UL + (ulong)frame);
            }

            foreach ((int op, int slot, int frame) in ops)
            {
                ulong iova = iovaBase + ((ulong)slot * K4);
                switch (op)
                {
                    case 0 when map[slot] is null:
                        Assert.Equal(Errno.None, f.Iommu.Map(dom, iova, paBase + ((ulong)frame * K4), K4, RW));
                        map[slot] = frame;
                        break;
                    case 1 when map[slot] is not null:
                        Assert.Equal(K4, f.Iommu.Unmap(dom, iova, K4));
                        map[slot] = null;
                        break;
                    default:
                        (DmaResult r, byte[] b) = AtsRead(dev, null, iova);
                        Assert.Equal(map[slot] is not null, r.IsOk);
                        if (map[slot] is int fr)
                        {
                            Assert.Equal(0xF00UL + (ulong)fr, BitConverter.ToUInt64(b));
                        }

                        break;
                }
            }
        }, iter: 60);
    }

    // §4 inv 3 on an SVA-bound process: random CPU writes, munmap, mmap again and mprotect with ATS DMA between;
    // a successful ATS read returns what the CPU reads at that address now, a write succeeds only while writable.
    [Fact]
    public void Property_no_atc_entry_outlives_the_notifier_on_an_sva_process()
    {
        Gen.Select(Gen.Int[0, 4], Gen.Int[0, 3], Gen.Byte).Array[1, 40].Sample(ops =>
        {
            (DriverBed f, PciDevice dev, HostPageAllocator pages) = SvaBed();
            using DriverBed _ = f;
            using var mm = new ProcessAddressSpace(pages, "p");
            ulong va = mm.Mmap(4 * K4);
            var state = new int[4]; // 0 unmapped, 1 read-only, 2 read-write
            for (int i = 0; i < 4; i++)
            {
                Assert.Equal(Errno.None, mm.Write(va + ((ulong)i * K4), [(byte)i]));
                state[i] = 2;
            }

            uint pasid = Bind(f, dev, mm);
            foreach ((int op, int i, byte v) in ops)
            {
                ulong at = va + ((ulong)i * K4);
                switch (op)
                {
                    case 0 when state[i] == 2:
                        Assert.Equal(Errno.None, mm.Write(at, [v]));
                        break;
                    case 1 when state[i] != 0:
                        mm.Munmap(at, K4);
                        state[i] = 0;
                        break;
                    case 2 when state[i] != 0:
                        mm.Mprotect(at, K4, state[i] == 2 ? VmProt.Read : VmProt.ReadWrite);
                        state[i] = 3 - state[i];
                        break;
                    case 3:
                        // A write may also wait on a page request (PTE not yet writable after mprotect): only success is checked.
                        if (dev.AtsDmaWrite(pasid, at, [v]).IsOk)
                        {
                            Assert.Equal(2, state[i]);
                            byte[] now = new byte[1];
                            Assert.Equal(Errno.None, mm.Read(at, now));
                            Assert.Equal(v, now[0]);
                        }

                        break;
                    default:
                        (DmaResult r, byte[] b) = AtsRead(dev, pasid, at);
                        Assert.Equal(state[i] != 0, r.IsOk);
                        if (state[i] != 0)
                        {
                            byte[] cpu = new byte[1];
                            Assert.Equal(Errno.None, mm.Read(at, cpu));
                            Assert.Equal(cpu[0], b[0]);
                        }

                        break;
                }
            }
        }, iter: 40);
    }
}
