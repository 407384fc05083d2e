using System.Collections.Concurrent;
using System.Globalization;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace VtdEmulator;

/// <summary>
/// A small emulated machine with a VT-d unit on its DMA path: guest RAM the emulator owns (with the PCI
/// hole left out), an MMIO window the guest's driver programs the unit through, two devices that DMA by requester id on their own threads, and
/// an interrupt controller that receives the unit's fault MSIs. It runs a short scenario and checks
/// what a guest would observe.
/// </summary>
public static unsafe class Machine
{
    /// <summary>Where the guest sees the unit's registers (the DRHD's register base in its ACPI table).</summary>
    public const ulong DmarBase = 0xFED9_0000;

    private const ulong TableArea = 0x0100_0000;   // the guest kernel's page allocator starts here
    private const ulong BufferBase = 0x4000_0000;  // device 1's buffers (64 pages), below the PCI hole
    private const ulong HighBuffer = GuestRam.HighStart + 0x10_0000; // device 2's, above 4 GiB
    private const ulong PeerBar = 0xC000_0000;     // a peer device's BAR, in the PCI hole: not RAM
    private const ulong Iova = 0x1000_0000;
    private const int Pages = 64;
    private const ulong FaultMsiAddress = 0xFEE0_0000;
    private const uint FaultMsiVector = 0x41;

    /// <summary>Runs the scenario.</summary>
    /// <returns>What happened, and whether each check held.</returns>
    public static EmulatorReport Run()
    {
        var report = new EmulatorReport();
        using var guestRam = new GuestRam(2UL << 30);
        PhysicalMemory ram = guestRam.Memory;
        var unit = new VtdUnit(ram, VtdConfig.Legacy48Bit);

        // The emulator's interrupt controller: MSIs arrive on whichever thread caused them (a DMA
        // thread here) and are delivered to the guest later, on its vCPU thread.
        var pendingMsis = new ConcurrentQueue<VtdInterruptEventArgs>();
        unit.FaultEvent += (_, msi) => pendingMsis.Enqueue(msi);
        var bus = new MmioBus(unit, DmarBase);
        var guest = new GuestDriver(bus, ram, TableArea);
        guest.Start(FaultMsiAddress, FaultMsiVector);

        // Two devices, each in its own domain, each with 64 pages at the same IOVA.
        var devices = new[] { new Device(0x0018, 1, BufferBase), new Device(0x0020, 2, HighBuffer) };
        foreach (Device d in devices)
        {
            d.Table = guest.AddDevice(d.Rid, d.Did);
            for (int p = 0; p < Pages; p++)
            {
                guest.Map(d.Table, d.Did, Iova + ((ulong)p << 12), d.Buffer + ((ulong)p << 12));
            }
        }

        // Both devices DMA at once, each on its own thread: a pattern into every page, read back,
        // then one access past their mapping (a fault the unit records and signals).
        Parallel.ForEach(devices, d => d.Result = RunDevice(unit, d));
        foreach (Device d in devices)
        {
            report.Check($"device {d.Rid:x4}: {d.Result.Written} pages written and read back through the unit", d.Result.Written == Pages && d.Result.ReadBack);
            report.Check($"device {d.Rid:x4}: the access past its mapping faulted ({d.Result.Fault})", d.Result.Fault == "Fault");
            report.Check($"device {d.Rid:x4}: its bytes are in its own pages only", OwnPagesOnly(ram, d, devices));
        }

        // The bytes are in the emulator's own RAM, where its CPU model would read them: no copy.
        report.Check("device 0020's first page is in the host block above the hole", *guestRam.Host(HighBuffer) == 0x20);

        // A guest that points a device at a peer's BAR: the hole is not RAM, so the DMA stops with a
        // memory error (a master abort) naming the device address, and no fault is recorded.
        guest.Map(devices[0].Table, devices[0].Did, Iova + (Pages * 4096UL) + 0x1000, PeerBar);
        DmaResult peer = unit.Read(devices[0].Rid, null, Iova + (Pages * 4096UL) + 0x1000, stackalloc byte[8]);
        report.Check($"a DMA to a peer BAR in the PCI hole: {peer.Status} at device address 0x{peer.StopAddress:x}", peer.Status == DmaStatus.MemoryError && peer.StopAddress == Iova + (Pages * 4096UL) + 0x1000);

        // The vCPU takes the fault interrupts: the guest's handler reads the records through MMIO.
        int msis = Deliver(pendingMsis, guest);
        report.Check($"{msis} fault MSI(s) to 0x{FaultMsiAddress:x}/0x{FaultMsiVector:x}, {guest.FaultLog.Count} fault records read", msis >= 1 && guest.FaultLog.Count == 2);
        report.Lines.AddRange(guest.FaultLog.Select(f => "  guest: DMAR fault: " + f));

        // A guest on a misbehaving day: odd MMIO never reaches the host as an exception.
        bus.Write(DmarBase + 0x1A, 2, 0xFFFF);
        bus.Write(DmarBase + 0x2000, 8, 1);
        _ = bus.Read(DmarBase + 0x21, 4);
        report.Check($"3 malformed MMIO accesses ignored and counted ({unit.IgnoredRegisterAccesses})", unit.IgnoredRegisterAccesses == 3);

        // A snapshot mid-run: restored into a fresh unit, the guest's next requests give the same answers.
        byte[] snapshot = unit.SaveState().ToBytes();
        guest.Unmap(devices[0].Table, devices[0].Did, Iova);
        string after = Probe(unit, devices[0]) + ", " + Probe(unit, devices[0], page: 1);
        var restored = new VtdUnit(ram, VtdConfig.Legacy48Bit);
        restored.RestoreState(VtdUnitState.FromBytes(snapshot));
        string afterRestore = Probe(restored, devices[0]) + ", " + Probe(restored, devices[0], page: 1);
        report.Check($"snapshot of {snapshot.Length} bytes restored into a fresh unit: pages 0 (unmapped) and 1 read '{afterRestore}' as before ('{after}')", after == afterRestore && after.StartsWith("Fault", StringComparison.Ordinal));

        // A guest reboot: the unit goes back to power-on values and DMA is untranslated until the guest enables it again.
        unit.Reset();
        report.Check($"after reset the unit passes DMA through untranslated ({Probe(unit, devices[1])})", Probe(unit, devices[1]) == $"Ok at 0x{Iova:x}");
        return report;
    }

    private static DeviceResult RunDevice(VtdUnit unit, Device d)
    {
        Span<byte> page = stackalloc byte[4096];
        Span<byte> back = stackalloc byte[4096];
        int written = 0;
        bool same = true;
        for (int p = 0; p < Pages; p++)
        {
            page.Fill((byte)(d.Rid + p));
            if (unit.Write(d.Rid, null, Iova + ((ulong)p << 12), page).IsOk)
            {
                written++;
            }

            same &= unit.Read(d.Rid, null, Iova + ((ulong)p << 12), back).IsOk && back.SequenceEqual(page);
        }

        string fault = unit.Read(d.Rid, null, Iova + (Pages * 4096UL), page[..64]).Status.ToString();
        return new DeviceResult(written, same, fault);
    }

    private static bool OwnPagesOnly(PhysicalMemory ram, Device d, Device[] all)
    {
        Span<byte> bytes = stackalloc byte[4096];
        foreach (Device owner in all)
        {
            for (int p = 0; p < Pages; p++)
            {
                ram.Read(owner.Buffer + ((ulong)p << 12), bytes);
                bool mine = bytes.IndexOfAnyExcept((byte)(d.Rid + p)) < 0;
                if (mine != (owner == d))
                {
                    return false;
                }
            }
        }

        return true;
    }

    private static int Deliver(ConcurrentQueue<VtdInterruptEventArgs> msis, GuestDriver guest)
    {
        int n = 0;
        while (msis.TryDequeue(out _))
        {
            n++;
            guest.OnFaultInterrupt();
        }

        return n;
    }

    private static string Probe(VtdUnit unit, Device d, int page = 0)
    {
        Span<byte> bytes = stackalloc byte[8];
        DmaResult r = unit.Read(d.Rid, null, Iova + ((ulong)page << 12), bytes);
        return string.Create(CultureInfo.InvariantCulture, $"{r.Status} at 0x{r.PhysicalAddress ?? r.StopAddress:x}");
    }

    private sealed class Device(ushort rid, ushort did, ulong buffer)
    {
        public ushort Rid { get; } = rid;

        public ushort Did { get; } = did;

        public ulong Buffer { get; } = buffer;

        public ulong Table { get; set; }

        public DeviceResult Result { get; set; }
    }

    private readonly record struct DeviceResult(int Written, bool ReadBack, string Fault);

    // The emulator's MMIO dispatch: accesses inside the unit's window go to the unit, with their size.
    private sealed class MmioBus(VtdUnit unit, ulong windowBase) : IMmio
    {
        public ulong Read(ulong offset, int size) => unit.MmioRead(Relative(offset), size);

        public void Write(ulong offset, int size, ulong value) => unit.MmioWrite(Relative(offset), size, value);

        // The guest driver passes register offsets; the misbehaving accesses pass bus addresses.
        private ulong Relative(ulong address) => address >= windowBase ? address - windowBase : address;
    }
}
