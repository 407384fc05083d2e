using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Uacce;

namespace UacceAccel;

/// <summary>
/// A machine with the accelerator: a VT-d unit in scalable mode with first-level translation, device-TLBs and page
/// requests, the intel-iommu driver, the ATS+PRI+PASID function, its engine, and its uacce device (<c>/dev/accel-0</c>).
/// </summary>
public sealed class AccelSystem : IDisposable
{
    private AccelSystem(int queues, AccelDmaMode mode, bool requestSva)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 6 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true });
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Intel = new IntelIommu(Platform, Unit);
        Pci.SetIommuOps(Intel).ThrowIfError();
        Device = Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { PasidWidth = 20, Ats = true, Pri = true, Acs = true, DeviceId = 0xacce });

        // 5.15's enable(SVA) wants PASID, ATS and PRI enabled: the IOMMU driver enabled them when it attached the
        // device's default domain (iommu_enable_dev_iotlb), as the unit has ECAP.DT and ECAP.PRS.
        Pages = HostPageAllocator.ForPlatform(Platform);
        Engine = new AccelEngine(Device, Pages, queues, mode);
        Driver = new UacceAccelDriver(Engine);
        Uacce = new UacceCore(Platform);
        Uacce.Alloc(Device, new UacceInterface("accel", requestSva ? UacceDeviceFlags.Sva : UacceDeviceFlags.None, Driver), out UacceDevice? accel).ThrowIfError();
        Accel = accel!;
        Accel.Api = "uacce_accel_v1";
        Accel.Algorithms = "copy\nxor";
        Accel.SetRegionPageCount(UacceQueueFileRegionType.Mmio, 1);
        Accel.SetRegionPageCount(UacceQueueFileRegionType.Dus, 1);
        Uacce.Register(Accel).ThrowIfError();
    }

    /// <summary>The platform.</summary>
    public Platform Platform { get; }

    /// <summary>The PCI segment.</summary>
    public PciBus Pci { get; }

    /// <summary>The VT-d unit.</summary>
    public VtdUnit Unit { get; }

    /// <summary>The intel-iommu driver.</summary>
    public IntelIommu Intel { get; }

    /// <summary>The accelerator function.</summary>
    public PciDevice Device { get; }

    /// <summary>The host page pool processes use.</summary>
    public HostPageAllocator Pages { get; }

    /// <summary>The hardware.</summary>
    public AccelEngine Engine { get; }

    /// <summary>The uacce driver.</summary>
    public UacceAccelDriver Driver { get; }

    /// <summary>The uacce framework.</summary>
    public UacceCore Uacce { get; }

    /// <summary>The uacce device.</summary>
    public UacceDevice Accel { get; }

    /// <summary>Builds the machine.</summary>
    /// <param name="queues">Hardware queues.</param>
    /// <param name="mode">How the engine's DMA reaches memory.</param>
    /// <param name="requestSva">Whether the driver asks uacce for SVA.</param>
    /// <returns>The machine.</returns>
    public static AccelSystem Create(int queues = 4, AccelDmaMode mode = AccelDmaMode.Untranslated, bool requestSva = true) => new(queues, mode, requestSva);

    /// <summary>A new process.</summary>
    /// <param name="name">Its name.</param>
    /// <returns>The process.</returns>
    public ProcessAddressSpace NewProcess(string name) => new(Pages, name);

    /// <summary>Opens <c>/dev/accel-0</c> in <paramref name="mm"/>, maps both regions and starts the queue.</summary>
    /// <param name="mm">The process.</param>
    /// <returns>The process's handle on its queue.</returns>
    /// <exception cref="IommuException">A step failed.</exception>
    public AccelClient Open(ProcessAddressSpace mm)
    {
        Uacce.Open(Accel.Name, mm, out int fd).ThrowIfError();
        var q = (UacceQueue)mm.GetFile(fd)!;
        q.Mmap(mm, (ulong)UacceQueueFileRegionType.Mmio, AccelEngine.DoorbellBytes, out ulong doorbell).ThrowIfError();
        q.Mmap(mm, (ulong)UacceQueueFileRegionType.Dus, AccelEngine.RingBytes, out ulong ring).ThrowIfError();
        q.Ioctl(UacceCommands.StartQ, default).ThrowIfError();
        return new AccelClient(mm, fd, q, doorbell, ring);
    }

    /// <inheritdoc/>
    public void Dispose() => Platform.Dispose();
}

/// <summary>The user-space side of one queue: the process writes descriptors into its mapped ring and rings the mapped doorbell.</summary>
/// <param name="Mm">The process.</param>
/// <param name="Fd">Its descriptor of the queue file.</param>
/// <param name="Queue">The queue.</param>
/// <param name="DoorbellVa">Where the doorbell page is mapped.</param>
/// <param name="RingVa">Where the ring is mapped.</param>
public sealed record AccelClient(ProcessAddressSpace Mm, int Fd, UacceQueue Queue, ulong DoorbellVa, ulong RingVa)
{
    private uint _tail;

    /// <summary>Writes <paramref name="d"/> at the tail of the ring and rings the doorbell (CPU writes through the process's mappings).</summary>
    /// <param name="d">The descriptor (status should be <see cref="AccelStatus.Pending"/>).</param>
    /// <returns>The ring slot.</returns>
    /// <exception cref="IommuException">The process cannot write its mappings (e.g. after remove zapped them).</exception>
    public int Submit(AccelDescriptor d)
    {
        int slot = (int)_tail;
        Mm.Write(RingVa + ((ulong)slot * AccelDescriptor.Size), d.ToBytes()).ThrowIfError();
        _tail = (_tail + 1) % AccelEngine.RingEntries;
        byte[] b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, _tail);
        Mm.Write(DoorbellVa, b).ThrowIfError();
        return slot;
    }

    /// <summary>Reads back the descriptor in <paramref name="slot"/> (its status).</summary>
    /// <param name="slot">Ring slot.</param>
    /// <returns>The descriptor.</returns>
    /// <exception cref="IommuException">The process cannot read its mapping.</exception>
    public AccelDescriptor Read(int slot)
    {
        byte[] b = new byte[AccelDescriptor.Size];
        Mm.Read(RingVa + ((ulong)slot * AccelDescriptor.Size), b).ThrowIfError();
        return AccelDescriptor.FromBytes(b);
    }
}
