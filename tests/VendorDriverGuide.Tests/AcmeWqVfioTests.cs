using System.Buffers.Binary;
using Iommu;
using Iommu.Mm;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Acme.Wq.Tests;

/// <summary>The driver under the real mdev core and VFIO type1, as a VMM would drive it.</summary>
public sealed class AcmeWqVfioTests
{
    [Fact]
    public void A_guest_queue_dma_lands_in_the_guest_memory_and_nowhere_else()
    {
        using var t = new AcmeWqBed();
        var mdevCore = new MdevCore(t.Platform);
        mdevCore.RegisterDevice(t.Parent, new AcmeWqDriver(t.Iommu, t.Parent)).ThrowIfError();
        mdevCore.Create(t.Parent, "acme_wq-wq", Guid.NewGuid(), out MdevDevice? mdev).ThrowIfError();

        var vfio = new VfioCore(t.Platform);
        var qemu = new ProcessAddressSpace(HostPageAllocator.ForPlatform(t.Platform), "qemu");
        VfioContainer container = vfio.OpenContainer(qemu, out _);
        vfio.RegisterDevice(mdev!).ThrowIfError();
        vfio.OpenGroup(qemu, mdev!.IommuGroup!.Id, out VfioGroup? group, out _).ThrowIfError();
        group!.SetContainer(container).ThrowIfError();
        container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();   // aux-attaches the mdev's domain
        ulong ram = qemu.Mmap(Sizes.MiB);
        container.MapDma(new VfioIommuType1DmaMap(32,
            VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE,
            ram, 0x10_0000, Sizes.MiB)).ThrowIfError();
        group.GetDeviceFd(qemu, mdev.Name, out VfioDeviceFile? device, out _).ThrowIfError();  // open_device
        MdevDeviceFile file = device!.MdevFile!;

        byte[] reg = new byte[4];
        Assert.Equal(4, file.Read(reg, AcmeWqDriver.PasidRegister));
        Assert.NotEqual(0u, BinaryPrimitives.ReadUInt32LittleEndian(reg));

        byte[] work = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(work, 0x10_0040);
        BinaryPrimitives.WriteUInt64LittleEndian(work.AsSpan(8), 0x1122_3344_5566_7788);
        Assert.Equal(16, file.Write(work, AcmeWqDriver.Portal));
        byte[] landed = new byte[8];
        qemu.Read(ram + 0x40, landed).ThrowIfError();
        Assert.Equal(0x1122_3344_5566_7788UL, BinaryPrimitives.ReadUInt64LittleEndian(landed));

        BinaryPrimitives.WriteUInt64LittleEndian(work, 0x90_0000);   // outside MAP_DMA: the IOMMU blocks it
        Assert.Equal(Errno.EFAULT.ToKernelReturn(), file.Write(work, AcmeWqDriver.Portal));
    }
}
