using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>The state a fuzz epoch starts from.</summary>
internal enum FuzzScenario
{
    /// <summary>TYPE1v2 container with two PCI groups (one shared IOMMU domain).</summary>
    ContainerV2,

    /// <summary>TYPE1 (v1) container with one PCI group.</summary>
    ContainerV1,

    /// <summary>Container with a group but no SET_IOMMU yet.</summary>
    ContainerNoBackend,

    /// <summary>Container with no group at all.</summary>
    ContainerNoGroup,

    /// <summary>TYPE1v2 container with dirty tracking already started.</summary>
    ContainerV2Dirty,

    /// <summary>TYPE1v2 container with 15 of 16 slots used and 45 of 48 locked pages charged (ENOSPC / ENOMEM edges).</summary>
    ContainerV2Full,

    /// <summary>Group A open but not in any container.</summary>
    GroupNoContainer,

    /// <summary>Group A in a container without a backend.</summary>
    GroupContainerNoBackend,

    /// <summary>Group A in a TYPE1v2 container with a device fd open (UNSET is -EBUSY).</summary>
    GroupWithDeviceFd,
}

/// <summary>
/// One platform for fuzzing the raw VFIO ioctls: a legacy 39-bit VT-d unit with the intel-iommu driver, two
/// PCI devices in separate groups bound to VFIO, a third device bound to a foreign driver (its group is not
/// viable), one process with a few user buffers of different protections, and the container/group of a
/// <see cref="FuzzScenario"/>. The process has no CAP_IPC_LOCK and a small RLIMIT_MEMLOCK so pinning stays bounded.
/// </summary>
internal sealed class FuzzBed : IDisposable
{
    public const string DevAName = "0000:00:01.0";
    public const string DevBName = "0000:00:02.0";
    public const string DevForeignName = "0000:00:03.0";
    public const ulong PageSize = 4096;
    public const ulong RwPages = 32;
    public const ulong MemlockPages = 48;
    public const uint DmaEntryLimit = 16;

    public FuzzBed(FuzzScenario scenario)
    {
        Scenario = scenario;
        Platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        PciBus pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, VtdConfig.Legacy39Bit);
        pci.AddDmaRemapper(Unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(Platform, new IntelIommuOptions(), Unit)).ThrowIfError();
        Vfio = new VfioCore(Platform, new VfioType1Options { AllowUnsafeInterrupts = true, DmaEntryLimit = DmaEntryLimit });
        Pages = HostPageAllocator.ForPlatform(Platform, 4 * Sizes.GiB, 64 * Sizes.MiB);
        Proc = new ProcessAddressSpace(Pages, "fuzz") { CapIpcLock = false, RlimitMemlock = MemlockPages * PageSize };

        DevA = pci.AddDevice(new PciDeviceSpec(DevAName) { Acs = true });
        DevB = pci.AddDevice(new PciDeviceSpec(DevBName) { Acs = true });
        PciDevice foreign = pci.AddDevice(new PciDeviceSpec(DevForeignName) { Acs = true });
        Vfio.RegisterDevice(DevA).ThrowIfError();
        Vfio.RegisterDevice(DevB).ThrowIfError();
        Vfio.RegisterDevice(foreign).ThrowIfError();
        Vfio.SetForeignDriver(foreign, bound: true);

        RwBuf = Filled(RwPages * PageSize);
        RoBuf = Filled(8 * PageSize);
        Proc.Mprotect(RoBuf, 8 * PageSize, VmProt.Read);
        NoneBuf = Proc.Mmap(4 * PageSize, VmProt.None);
        ZeroBuf = Proc.Mmap(4 * PageSize);
        BitmapBuf = Proc.Mmap(2 * PageSize);
        Hole = Proc.Mmap(4 * PageSize);
        Proc.Munmap(Hole, 4 * PageSize);

        Container = Vfio.OpenContainer(Proc, out _);
        OtherContainer = Vfio.OpenContainer(Proc, out _);
        DevNullFd = Proc.InstallFile(new object());
        ClosedFd = Proc.InstallFile(new object());
        Proc.Close(ClosedFd).ThrowIfError();
        Vfio.OpenGroup(Proc, DevA.IommuGroup!.Id, out VfioGroup? ga, out _).ThrowIfError();
        GroupA = ga!;
        Vfio.OpenGroup(Proc, DevB.IommuGroup!.Id, out VfioGroup? gb, out _).ThrowIfError();
        GroupB = gb!;

        switch (scenario)
        {
            case FuzzScenario.ContainerV2:
            case FuzzScenario.ContainerV2Dirty:
            case FuzzScenario.ContainerV2Full:
                GroupA.SetContainer(Container).ThrowIfError();
                GroupB.SetContainer(Container).ThrowIfError();
                Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
                if (scenario == FuzzScenario.ContainerV2Dirty)
                {
                    Container.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START).ThrowIfError();
                }

                if (scenario == FuzzScenario.ContainerV2Full)
                {
                    TopUp();
                }

                break;
            case FuzzScenario.ContainerV1:
                GroupA.SetContainer(Container).ThrowIfError();
                Container.SetIommu(VfioUapi.VFIO_TYPE1_IOMMU).ThrowIfError();
                break;
            case FuzzScenario.ContainerNoBackend:
            case FuzzScenario.GroupContainerNoBackend:
                GroupA.SetContainer(Container).ThrowIfError();
                break;
            case FuzzScenario.GroupWithDeviceFd:
                GroupA.SetContainer(Container).ThrowIfError();
                Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
                GroupA.GetDeviceFd(Proc, DevAName, out _, out int dfd).ThrowIfError();
                DeviceFd = dfd;
                break;
            case FuzzScenario.ContainerNoGroup:
            case FuzzScenario.GroupNoContainer:
            default:
                break;
        }
    }

    public FuzzScenario Scenario { get; }

    public Platform Platform { get; }

    public VtdUnit Unit { get; }

    public VfioCore Vfio { get; }

    public HostPageAllocator Pages { get; }

    public ProcessAddressSpace Proc { get; }

    public PciDevice DevA { get; }

    public PciDevice DevB { get; }

    public VfioContainer Container { get; }

    public VfioContainer OtherContainer { get; }

    public VfioGroup GroupA { get; }

    public VfioGroup GroupB { get; }

    /// <summary>The device fd the scenario opened, or -1.</summary>
    public int DeviceFd { get; } = -1;

    /// <summary>An fd naming something that is not a VFIO file.</summary>
    public int DevNullFd { get; }

    /// <summary>An fd number that was closed.</summary>
    public int ClosedFd { get; }

    /// <summary>64 written read/write pages.</summary>
    public ulong RwBuf { get; }

    /// <summary>8 written pages, then made read-only.</summary>
    public ulong RoBuf { get; }

    /// <summary>4 PROT_NONE pages.</summary>
    public ulong NoneBuf { get; }

    /// <summary>4 never-touched read/write pages (a READ map pins the zero page).</summary>
    public ulong ZeroBuf { get; }

    /// <summary>2 read/write pages for dirty bitmaps.</summary>
    public ulong BitmapBuf { get; }

    /// <summary>4 pages that were unmapped.</summary>
    public ulong Hole { get; }

    public void Dispose() => Platform.Dispose();

    /// <summary>Maps 3-page buffers at 0x4000_0000 + k·64K until one slot is left (stops at the first failure, e.g. RLIMIT).</summary>
    public void TopUp()
    {
        for (ulong k = 0; Container.Backend is { DmaAvail: > 1 } && k < 64; k++)
        {
            Errno e = Container.MapDma(new VfioIommuType1DmaMap(32, 3, RwBuf + (k % 8 * 3 * PageSize), 0x4000_0000 + (k * 0x10000), 3 * PageSize));
            if (e != Errno.None && e != Errno.EEXIST)
            {
                break;
            }
        }
    }

    private ulong Filled(ulong size)
    {
        ulong va = Proc.Mmap(size);
        var page = new byte[PageSize];
        for (ulong i = 0; i < size / PageSize; i++)
        {
            Array.Fill(page, (byte)(0x40 + i));
            Proc.Write(va + (i * PageSize), page).ThrowIfError();
        }

        return va;
    }
}
