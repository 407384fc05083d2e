using Iommu.Devices;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware.Infrastructure;

/// <summary>
/// A platform with one ATS/PRI device 03:00.0 behind a unit with ECAP.DT/PRS/PDS, first-level tables for
/// its PASIDs (<see cref="FirstStageRig"/>), a 4 KiB page request queue (128 descriptors) and a 256-bit
/// invalidation queue. Registers and descriptors are written with the spec's literal offsets and bits.
/// </summary>
internal sealed class AtsRig : IDisposable
{
    public const ulong Dte = 1UL << 2, Pre = 1UL << 4;

    public AtsRig(bool dte = true, bool pre = true, VtdConfig? config = null, int pqs = 0)
    {
        Config = config ?? VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true, PageRequestDrain = true };
        Platform = new Platform(new PlatformOptions { MemorySize = 256 * Sizes.MiB });
        Fl = new FirstStageRig(Config, memory: Platform.Memory);
        B.ScalableContext(FirstStageRig.Rid, Fl.Dir, pdts: 7, extraLow: (dte ? Dte : 0) | (pre ? Pre : 0));
        Pci = Platform.AddPciBus();
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Dev = Pci.AddDevice(new PciDeviceSpec("0000:03:00.0") { PasidWidth = 20, Ats = true, Pri = true });
        Dev.EnablePasid().ThrowIfError();
        Dev.EnableAts().ThrowIfError();
        Dev.EnablePri().ThrowIfError();
        Unit.PageRequestEvent += (_, e) => Events.Add((e.Address, e.Data));
        if (Config.PageRequests)
        {
            QueueSize = 4096UL << pqs;
            Prq = B.AllocFrames(1 << pqs);
            Unit.Write64(0xD0, Prq | (uint)pqs);
        }

        B.EnableQueue(wide: true);
        Fl.Enable();
    }

    public VtdConfig Config { get; }

    public Platform Platform { get; }

    public FirstStageRig Fl { get; }

    public VtdBench B => Fl.B;

    public VtdUnit Unit => Fl.Unit;

    public PciBus Pci { get; }

    public PciDevice Dev { get; }

    public ulong Prq { get; }

    public ulong QueueSize { get; }

    public List<(ulong Address, uint Data)> Events { get; } = [];

    public ulong Pqh
    {
        get => Unit.Read64(0xC0);
        set => Unit.Write64(0xC0, value);
    }

    public ulong Pqt => Unit.Read64(0xC8);

    public uint Prs => Unit.Read32(0xDC);

    public uint Pectl => Unit.Read32(0xE0);

    /// <summary>Programs PEDATA/PEADDR and unmasks the event, as Linux does once its handler is installed.</summary>
    public void Unmask(uint data = 0x4321, uint address = 0xFEE0_1000)
    {
        Unit.Write32(0xE4, data);
        Unit.Write32(0xE8, address);
        Unit.Write32(0xEC, 0);
        Unit.Write32(0xE0, 0);
    }

    public (ulong Q0, ulong Q1, ulong Q2, ulong Q3) Descriptor(ulong offset) =>
        (B.Memory.ReadUInt64(Prq + offset), B.Memory.ReadUInt64(Prq + offset + 8), B.Memory.ReadUInt64(Prq + offset + 16), B.Memory.ReadUInt64(Prq + offset + 24));

    public bool Request(uint? pasid, ulong address, bool read = true, bool write = false, int prgi = 0, bool last = true) =>
        Unit.PageRequest(Dev, new PageRequestMessage(pasid, address, read, write, Execute: false, Privileged: false, prgi, last));

    /// <summary>Page group response (type 9), Linux's encoding.</summary>
    public void Respond(uint? pasid, int prgi, int code, bool last = true) =>
        B.Submit(9 | (pasid is null ? 0 : 1UL << 4) | ((ulong)code << 12) | ((ulong)FirstStageRig.Rid << 16) | ((ulong)pasid.GetValueOrDefault() << 32),
            (last ? 4UL : 0) | ((ulong)prgi << 3));

    /// <summary>PASID-based device-TLB invalidation (type 8) as <c>qi_flush_dev_iotlb_pasid</c> builds it.</summary>
    public void FlushPasidDevTlb(uint pasid, ulong address, int order, bool global = false)
    {
        ulong q1 = address & ~0xFFFUL;
        if (order > 0)
        {
            q1 |= ((1UL << (12 + order - 1)) - 1) & ~0xFFFUL;
            q1 &= ~(1UL << (12 + order - 1));
            q1 |= 1UL << 11;
        }

        B.Submit(8 | ((ulong)FirstStageRig.Rid << 16) | ((ulong)pasid << 32), q1 | (global ? 1UL : 0));
    }

    /// <summary>Device-TLB invalidation (type 3) as <c>qi_flush_dev_iotlb</c> builds it.</summary>
    public void FlushDevTlb(ulong address, int order)
    {
        ulong addr = address;
        if (order > 0)
        {
            addr |= (1UL << (12 + order - 1)) - 1;
        }

        B.Submit(3 | ((ulong)FirstStageRig.Rid << 32), (addr & ~0xFFFUL) | (order > 0 ? 1UL : 0));
    }

    public void Dispose() => Platform.Dispose();
}
