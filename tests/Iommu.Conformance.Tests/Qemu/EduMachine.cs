using System.Globalization;

namespace Iommu.Conformance.Tests.Qemu;

/// <summary>
/// Where a device sits: bus 0 at any slot and function (function 0 of a slot with several is multifunction=on), alone (slot 0) behind its own PCIe root port on bus N, or (when
/// <paramref name="Bridged"/>) on bus <see cref="BridgedBus"/> behind a <c>pcie-pci-bridge</c> at 10:00.0 under root port 00:1c.0.
/// </summary>
internal readonly record struct PciLocation(byte Bus, byte Slot, byte Function = 0, bool Bridged = false)
{
    /// <summary>The one bus behind the PCIe-to-PCI bridge (its root port's secondary bus is one below).</summary>
    public const byte BridgedBus = 0x11;

    public ushort RequesterId => (ushort)((Bus << 8) | (Slot << 3) | Function);

    /// <summary>The requester ID its DMA carries: behind the bridge, the bridge's (secondary bus, 00.0), as QEMU's pci_device_iommu_address_space aliases it.</summary>
    public ushort DmaRequesterId => Bridged ? (ushort)(Bus << 8) : RequesterId;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Bus:x2}:{Slot:x2}.{Function:x}");

    public static PciLocation Parse(string bdf)
    {
        // "bb:ss.f"
        byte bus = byte.Parse(bdf.AsSpan(0, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        byte slot = byte.Parse(bdf.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        byte fn = byte.Parse(bdf.AsSpan(6, 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        return new PciLocation(bus, slot, fn);
    }
}

/// <summary>
/// A q35 machine under TCG with QEMU's intel-iommu and one <c>edu</c> device per requester, driven
/// over qtest. There is no firmware: a 64 KiB <c>-bios</c> whose reset vector is
/// <c>cli; hlt; jmp $-2</c> parks the vCPU, and <c>-icount shift=0,sleep=off</c> lets edu's 100 ms DMA
/// timer fire at once while it halts. The test enumerates PCI itself (ports 0xCF8/0xCFC).
/// </summary>
internal sealed class EduMachine : IDisposable
{
    public const ulong DmarBase = 0xFED9_0000;
    public const ulong RamSize = 256UL << 20;
    private const ulong EduBuffer = 0x40000;
    private const ulong Bus0BarBase = 0xE800_0000;
    private const ulong PortWindowBase = 0xE000_0000;
    private const byte FirstRootPortSlot = 0x18;
    private const byte BridgePortSlot = 0x1C;
    private const ulong BridgeWindow = 0xE600_0000;

    private readonly QtestClient _qtest;
    private readonly Dictionary<ushort, ulong> _bars = [];

    public EduMachine(string qemu, bool scalable, IReadOnlyList<PciLocation> devices, TimeSpan timeout, bool cachingMode = false)
    {
        string bios = Path.Combine(Path.GetTempPath(), "iommu-conformance-halt.bin");
        WriteHaltBios(bios);
        var args = new List<string>
        {
            "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
            "-m", "256M", "-bios", bios, "-icount", "shift=0,sleep=off",
            "-device", "intel-iommu,aw-bits=48" + (scalable ? ",x-scalable-mode=on" : "") + (cachingMode ? ",caching-mode=on" : ""),
        };
        int bridged = 0;
        foreach (PciLocation d in devices)
        {
            if (d.Bridged)
            {
                if (d.Bus != PciLocation.BridgedBus || d.Slot == 0 || bridged++ > 0)
                {
                    throw new ArgumentException($"One device behind the PCIe-to-PCI bridge, on bus {PciLocation.BridgedBus:x2} at a slot above 0: {d}");
                }

                args.AddRange(["-device", string.Create(CultureInfo.InvariantCulture, $"pcie-root-port,id=rpbr,chassis=0x{BridgePortSlot:x},bus=pcie.0,addr=0x{BridgePortSlot:x}")]);
                args.AddRange(["-device", "pcie-pci-bridge,id=br,bus=rpbr,addr=0x0"]);
                args.AddRange(["-device", string.Create(CultureInfo.InvariantCulture, $"edu,dma_mask=0xffffffffffffffff,bus=br,addr=0x{d.Slot:x}.{d.Function}")]);
            }
            else if (d.Bus == 0)
            {
                // Several functions of one slot: function 0 must be there and say multifunction=on (QEMU refuses the others otherwise).
                bool multi = devices.Any(o => !o.Bridged && o.Bus == 0 && o.Slot == d.Slot && o.Function != d.Function);
                if (multi && d.Function != 0 && !devices.Any(o => !o.Bridged && o.Bus == 0 && o.Slot == d.Slot && o.Function == 0))
                {
                    throw new ArgumentException($"Function {d.Function} of slot {d.Slot:x2} needs function 0 of that slot too: {d}");
                }

                string mf = multi && d.Function == 0 ? ",multifunction=on" : "";
                args.AddRange(["-device", string.Create(CultureInfo.InvariantCulture, $"edu,dma_mask=0xffffffffffffffff,bus=pcie.0,addr=0x{d.Slot:x}.{d.Function}{mf}")]);
            }
            else
            {
                if (d.Slot != 0 || d.Function != 0)
                {
                    throw new ArgumentException($"A device on bus {d.Bus} must be at slot 0 behind its root port: {d}");
                }

                int port = FirstRootPortSlot + d.Bus - 1;
                args.AddRange(["-device", string.Create(CultureInfo.InvariantCulture, $"pcie-root-port,id=rp{d.Bus},chassis={d.Bus},bus=pcie.0,addr=0x{port:x}")]);
                args.AddRange(["-device", string.Create(CultureInfo.InvariantCulture, $"edu,dma_mask=0xffffffffffffffff,bus=rp{d.Bus},addr=0x0")]);
            }
        }

        _qtest = QtestClient.Start(qemu, args, timeout);
        try
        {
            int bus0 = 0;
            foreach (PciLocation d in devices)
            {
                ulong bar;
                if (d.Bridged)
                {
                    // Root port 00:1c.0: secondary 0x10, subordinate 0x11; bridge 10:00.0: secondary = subordinate 0x11;
                    // both forward one 16 MiB memory window and master (the bridge forwards the edu's DMA).
                    const byte Sec = PciLocation.BridgedBus - 1;
                    bar = BridgeWindow;
                    uint window = ((uint)(bar >> 16) & 0xFFF0) | ((uint)((bar + (16UL << 20) - 1) >> 16) & 0xFFF0) << 16;
                    ConfigWrite(0, BridgePortSlot, 0, 0x18, (uint)((Sec << 8) | (PciLocation.BridgedBus << 16)));
                    ConfigWrite(0, BridgePortSlot, 0, 0x20, window);
                    ConfigWrite(0, BridgePortSlot, 0, 0x04, 0x6);
                    ConfigWrite(Sec, 0, 0, 0x18, (uint)(Sec | (PciLocation.BridgedBus << 8) | (PciLocation.BridgedBus << 16)));
                    ConfigWrite(Sec, 0, 0, 0x20, window);
                    ConfigWrite(Sec, 0, 0, 0x04, 0x6);
                }
                else if (d.Bus == 0)
                {
                    bar = Bus0BarBase + ((ulong)bus0++ << 20);
                }
                else
                {
                    // Root port: primary 0, secondary = subordinate = bus; a 16 MiB memory window; memory + bus master.
                    byte port = (byte)(FirstRootPortSlot + d.Bus - 1);
                    bar = PortWindowBase + ((ulong)d.Bus << 24);
                    ConfigWrite(0, port, 0, 0x18, (uint)((d.Bus << 8) | (d.Bus << 16)));
                    uint baseField = (uint)(bar >> 16) & 0xFFF0, limitField = (uint)((bar + (16UL << 20) - 1) >> 16) & 0xFFF0;
                    ConfigWrite(0, port, 0, 0x20, baseField | (limitField << 16));
                    ConfigWrite(0, port, 0, 0x04, 0x6);
                }

                uint id = ConfigRead(d.Bus, d.Slot, d.Function, 0);
                if (id != 0x11E8_1234)
                {
                    throw new InvalidOperationException($"No edu device at {d} (vendor/device 0x{id:x8}).");
                }

                ConfigWrite(d.Bus, d.Slot, d.Function, 0x10, (uint)bar);
                ConfigWrite(d.Bus, d.Slot, d.Function, 0x04, 0x6);
                if (_qtest.Readl(bar) != 0x0100_00ED)
                {
                    throw new InvalidOperationException($"edu at {d}: BAR0 at 0x{bar:x} does not answer.");
                }

                _bars[d.DmaRequesterId] = bar;
            }
        }
        catch
        {
            _qtest.Dispose();
            throw;
        }
    }

    public QtestClient Qtest => _qtest;

    /// <summary>Byte offset inside edu's 4 KiB buffer that is never a DMA destination: it stays zero and is the source of every write probe.</summary>
    public const int ZeroOffset = 0x800;

    public ulong Cap => _qtest.Readq(DmarBase + 0x08);

    public ulong Ecap => _qtest.Readq(DmarBase + 0x10);

    /// <summary>Points the unit at the root table, latches it, invalidates, enables translation.</summary>
    public void EnableTranslation(ulong rtaddr)
    {
        _qtest.Writeq(DmarBase + 0x20, rtaddr);
        _qtest.Writel(DmarBase + 0x18, 1u << 30); // SRTP
        Poll(() => (_qtest.Readl(DmarBase + 0x1C) & (1u << 30)) != 0, "GSTS.RTPS");
        InvalidateAll();
        _qtest.Writel(DmarBase + 0x18, 1u << 31); // TE
        Poll(() => (_qtest.Readl(DmarBase + 0x1C) & (1u << 31)) != 0, "GSTS.TES");
    }

    /// <summary>Global context-cache and IOTLB invalidation through the registers (QEMU 7.2 has no PASID cache).</summary>
    public void InvalidateAll()
    {
        _qtest.Writeq(DmarBase + 0x28, (1UL << 63) | (1UL << 61));
        _qtest.Writeq(DmarBase + 0xF8, (1UL << 63) | (1UL << 60));
    }

    /// <summary>Reads and clears the (single) fault-recording register; null when F is clear.</summary>
    public (ulong Q0, ulong Q1)? TakeFault()
    {
        ulong q1 = _qtest.Readq(DmarBase + 0x228);
        if ((q1 & (1UL << 63)) == 0)
        {
            return null;
        }

        ulong q0 = _qtest.Readq(DmarBase + 0x220);
        _qtest.Writel(DmarBase + 0x22C, 1u << 31);  // F is RW1C
        _qtest.Writel(DmarBase + 0x34, 0x1);        // FSTS.PFO
        return (q0, q1);
    }

    /// <summary>One edu DMA of <paramref name="count"/> bytes between RAM address (IOVA) <paramref name="iova"/> and buffer offset <paramref name="bufferOffset"/>.</summary>
    public void Dma(ushort requester, ulong iova, int bufferOffset, int count, bool toRam)
    {
        ulong bar = _bars[requester];
        ulong edu = EduBuffer + (ulong)bufferOffset;
        _qtest.Writeq(bar + 0x80, toRam ? edu : iova);
        _qtest.Writeq(bar + 0x88, toRam ? iova : edu);
        _qtest.Writeq(bar + 0x90, (ulong)count);
        _qtest.Writeq(bar + 0x98, toRam ? 3UL : 1UL);
        Poll(() => (_qtest.Readq(bar + 0x98) & 1) == 0, "edu DMA completion");
    }

    public void Dispose() => _qtest.Dispose();

    private void Poll(Func<bool> done, string what)
    {
        for (int i = 0; i < 20000; i++)
        {
            if (done())
            {
                return;
            }
        }

        throw new TimeoutException($"QEMU: {what} did not happen. stderr: {_qtest.Stderr}");
    }

    private static uint ConfigAddress(byte bus, byte slot, byte fn, int reg) =>
        0x8000_0000u | ((uint)bus << 16) | ((uint)slot << 11) | ((uint)fn << 8) | (uint)(reg & 0xFC);

    private uint ConfigRead(byte bus, byte slot, byte fn, int reg)
    {
        _qtest.Outl(0xCF8, ConfigAddress(bus, slot, fn, reg));
        return _qtest.Inl(0xCFC);
    }

    private void ConfigWrite(byte bus, byte slot, byte fn, int reg, uint value)
    {
        _qtest.Outl(0xCF8, ConfigAddress(bus, slot, fn, reg));
        _qtest.Outl(0xCFC, value);
    }

    internal static void WriteHaltBios(string path)
    {
        byte[] bios = new byte[64 * 1024];
        bios.AsSpan().Fill(0xFF);
        // Reset vector (0xFFFFFFF0): cli; hlt; jmp back to the hlt.
        bios[^16] = 0xFA;
        bios[^15] = 0xF4;
        bios[^14] = 0xEB;
        bios[^13] = 0xFD;
        // A name of its own per call: test classes start machines in parallel in one process, and with a per-process
        // name one call's Move took the file another call had just written (FileNotFoundException in CI).
        string tmp = path + "." + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "." + Guid.NewGuid().ToString("N");
        File.WriteAllBytes(tmp, bios);
        File.Move(tmp, path, overwrite: true);
    }
}
