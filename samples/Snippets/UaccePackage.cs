// snippet-begin: uacce-package
using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Uacce;
// snippet-end: uacce-package

namespace Snippets;

/// <summary>src/Uacce/PACKAGE.md.</summary>
internal static class UaccePackage
{
    public static (UacceDeviceFlags Flags, DmaResult Dma, ulong CpuPa) Run()
    {
        // snippet-begin: uacce-package
        using var platform = new Platform(new PlatformOptions { MemorySize = 6 * Sizes.GiB });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true });
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(platform, unit)).ThrowIfError();
        PciDevice accel = pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        // the driver enabled PASID, ATS and PRI at attach (5.15's enable(SVA) needs them)

        var uacce = new UacceCore(platform);                                // one per Platform
        uacce.Alloc(accel, new UacceInterface("accel", UacceDeviceFlags.Sva, new MyAccelOps()), out UacceDevice? dev).ThrowIfError();
        uacce.Register(dev).ThrowIfError();                                 // /dev/accel-0

        using var app = new ProcessAddressSpace(HostPageAllocator.ForPlatform(platform), "app");
        ulong buffer = app.Mmap(4096);
        app.Write(buffer, "hello"u8).ThrowIfError();
        uacce.Open(dev!.Name, app, out int fd).ThrowIfError();              // binds app's mm: the queue gets its PASID
        var queue = (UacceQueue)app.GetFile(fd)!;
        queue.Ioctl(UacceCommands.StartQ, default).ThrowIfError();

        // The device DMAs with the queue's PASID at the process's own virtual address.
        DmaResult dma = accel.DmaRead(queue.Pasid, buffer, new byte[5]);
        Console.WriteLine($"{dev.Name}: flags {dev.Flags}, PASID {queue.Pasid}, DMA {dma.Status} at 0x{dma.Address:x}");
        // snippet-end: uacce-package
        app.TryTranslate(buffer, out ulong pfn);
        return (dev.Flags, dma, pfn << 12);
    }
}

// snippet-begin: uacce-package

// The accelerator's driver: a hardware queue per open file, programmed with the PASID at START_Q.
sealed class MyAccelOps : IUacceOps
{
    public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue) => Errno.None;

    public void PutQueue(UacceQueue queue) { }

    public Errno StartQueue(UacceQueue queue) => Errno.None;

    public void StopQueue(UacceQueue queue) { }

    public bool IsQUpdated(UacceQueue queue) => false;
}
// snippet-end: uacce-package
