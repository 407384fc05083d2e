using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>The attach-time errnos of spec §4.4 (steps 5, 7 and 8), typed and through raw SET_IOMMU / SET_CONTAINER.</summary>
public sealed class AttachErrnoTests
{
    [Fact]
    public void Domain_allocation_failure_is_eio_and_leaves_the_container_without_a_backend()
    {
        using var bed = new Type1Bed();
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        bed.Vfio.OpenGroup(bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();

        bed.Platform.Frames.FailNth(1); // the new domain's page-table root: iommu_domain_alloc returns NULL
        Assert.Equal(Errno.EIO, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Null(c.Backend);

        Assert.Equal(0, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU)); // works once memory is there
        c.Backend!.Audit();
    }

    [Fact]
    public void Driver_refusal_of_an_rmrr_locked_device_is_eperm()
    {
        using var bed = new Type1Bed();
        PciDevice dev = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { Acs = true, RmrrLocked = true });
        bed.Vfio.RegisterDevice(dev).ThrowIfError();
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        bed.Vfio.OpenGroup(bed.Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();

        Assert.Equal(Errno.EPERM, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(-(int)Errno.EPERM, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Null(c.Backend);
        Assert.Same(dev.IommuGroup.DefaultDomain, dev.IommuGroup.Domain); // still on its default domain
    }

    [Fact]
    public void A_USB_controller_named_in_an_RMRR_can_be_assigned_and_its_relaxable_region_mapped_over()
    {
        // device_rmrr_is_relaxable: the RMRR of a USB controller (class 0x0C03) locks nothing, and type1 leaves
        // its DIRECT_RELAXABLE region in the IOVA list, so the user may map guest memory there.
        const ulong rmrr = 0x7E0_0000;
        using var bed = new Type1Bed();
        bed.Pci.AddRmrr(rmrr, rmrr + 0xFFFF, PciAddress.Parse("0000:00:14.0", null));
        PciDevice usb = bed.Pci.AddDevice(new PciDeviceSpec("0000:00:14.0") { Acs = true, ClassCode = 0x0C_0330 });
        bed.Vfio.RegisterDevice(usb).ThrowIfError();
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        bed.Vfio.OpenGroup(bed.Proc, usb.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();

        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        ulong buf = bed.Buffer(0x1000, seed: 0x5A);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, rmrr + 0x8000, 0x1000)));

        var got = new byte[1];
        Assert.True(usb.DmaRead(null, rmrr + 0x8000, got).IsOk);
        var want = new byte[1];
        bed.Proc.Read(buf, want).ThrowIfError();
        Assert.Equal(want[0], got[0]);
        Assert.False(usb.DmaRead(null, rmrr, got).IsOk); // the rest of the RMRR is not mapped in the container's domain
        c.Backend!.Audit();
    }

    [Fact]
    public void A_group_whose_aperture_excludes_an_existing_mapping_is_einval()
    {
        // Two units on one PCI segment: 00:03.0 behind a 48-bit unit, 00:04.0 behind a 39-bit one.
        using var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        PciBus pci = platform.AddPciBus();
        var wide = new VtdUnit(platform.Memory, VtdConfig.Legacy48Bit);
        var narrow = new VtdUnit(platform.Memory, VtdConfig.Legacy39Bit);
        pci.AddDmaRemapper(wide, includeAll: false, PciAddress.Parse("0000:00:03.0", null));
        pci.AddDmaRemapper(narrow, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, wide, narrow)).ThrowIfError();
        PciDevice a = pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        PciDevice b = pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { Acs = true });
        var vfio = new VfioCore(platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        vfio.RegisterDevice(a).ThrowIfError();
        vfio.RegisterDevice(b).ThrowIfError();
        var proc = new ProcessAddressSpace(HostPageAllocator.ForPlatform(platform, 4 * Sizes.GiB, 64 * Sizes.MiB), "qemu");

        VfioContainer c = vfio.OpenContainer(proc, out int cfd);
        vfio.OpenGroup(proc, a.IommuGroup!.Id, out VfioGroup? ga, out _).ThrowIfError();
        ga!.SetContainer(c).ThrowIfError();
        c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
        ulong buf = proc.Mmap(Sizes.Page);
        proc.Write(buf, new byte[8]).ThrowIfError();
        ulong high = 1UL << 40; // inside 48 bits, beyond 39
        c.MapDma(Type1Bed.Map(buf, high, Sizes.Page)).ThrowIfError();

        vfio.OpenGroup(proc, b.IommuGroup!.Id, out VfioGroup? gb, out _).ThrowIfError();
        Assert.Equal(Errno.EINVAL, gb!.SetContainer(proc, cfd));
        Assert.Same(b.IommuGroup.DefaultDomain, b.IommuGroup.Domain); // detached again after the failed attach
        Assert.Single(c.Backend!.Domains);
        c.Backend.Audit();

        var unmap = new VfioIommuType1DmaUnmap(24, 0, high, Sizes.Page);
        c.UnmapDma(ref unmap).ThrowIfError();
        Assert.Equal(Errno.None, gb.SetContainer(proc, cfd)); // nothing above 2^39 any more
        Assert.Equal(2, c.Backend.Domains.Count);
        Assert.Equal(0, proc.LockedVm);
    }
}
