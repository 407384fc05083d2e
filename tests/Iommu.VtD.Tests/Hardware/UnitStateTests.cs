using System.Globalization;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>An emulator's reboot and snapshots: <see cref="VtdUnit.Reset"/>, <see cref="VtdUnit.SaveState"/> and <see cref="VtdUnit.RestoreState"/> (issue 17).</summary>
public sealed class UnitStateTests
{
    private const ushort Rid = 0x0310;
    private const ulong DataBase = 0x2000_0000;

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(5)]
    public void A_state_saved_mid_run_and_restored_into_a_fresh_unit_gives_the_same_dma_results_and_faults(int faultsBefore)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = 4 });
        ulong sl = b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        for (ulong p = 0; p < 8; p++)
        {
            b.Map(sl, 4, p << 12, DataBase + (p << 12));
            b.Memory.WriteUInt64(DataBase + (p << 12), 0xDA7A_0000 + p);
        }

        b.Enable(scalable: false);
        b.EnableQueue(wide: false);
        b.Unit.Write32(0x38, 0); // FECTL: fault interrupts unmasked

        // Before the snapshot: some hits, some faults (so the next fault record is not the first).
        for (int i = 0; i < faultsBefore; i++)
        {
            Assert.Equal(DmaStatus.Fault, Read(b.Unit, 0x100_0000 + ((ulong)i << 12)).Status);
        }

        Assert.True(Read(b.Unit, 0x3008).IsOk);

        byte[] saved = b.Unit.SaveState().ToBytes();
        List<string> original = RunAfterSnapshot(b.Unit, b.Memory, b);

        var fresh = new VtdUnit(b.Memory, b.Config);
        fresh.RestoreState(VtdUnitState.FromBytes(saved));
        List<string> restored = RunAfterSnapshot(fresh, b.Memory, b);

        Assert.Equal(original, restored);
        Assert.Contains(original, s => s.EndsWith("status 0x600D", StringComparison.Ordinal)); // the queue ran
        Assert.Contains(original, s => s.Contains(": Fault ", StringComparison.Ordinal));
        Assert.Contains(original, s => s.StartsWith("fault MSI", StringComparison.Ordinal) || faultsBefore > 0);
    }

    [Fact]
    public void A_state_prints_its_capabilities_status_root_and_next_fault_record()
    {
        // An emulator logs what it saved; the default ToString printed only the type name.
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { FaultRecordCount = 4 });
        b.SetupLegacyDevice(Rid, aw: 2, did: 1);
        b.Enable(scalable: false);
        Assert.Equal(DmaStatus.Fault, Read(b.Unit, 0x100_0000).Status);

        VtdUnitState state = b.Unit.SaveState();
        uint gsts = b.Unit.Read32(VtdRegister.Gsts);
        Assert.NotEqual(0u, gsts);
        Assert.Equal(string.Create(CultureInfo.InvariantCulture,
            $"VT-d state: CAP 0x{b.Config.Cap:x}, ECAP 0x{b.Config.Ecap:x}, GSTS 0x{gsts:x}, root 0x{state.LatchedRootTable:x}, next fault record 1"), state.ToString());
        Assert.NotEqual(0UL, state.LatchedRootTable);
    }

    // A 32-bit register read takes no lock; a reset used to swap in zeroed register arrays and fill them afterwards,
    // so a read meanwhile returned 0 for CAP, a value the register never held.
    [Fact]
    public void A_register_read_racing_resets_sees_only_values_the_register_held()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        uint capLow = (uint)b.Config.Cap, ecapLow = (uint)b.Config.Ecap, ver = b.Unit.Read32(0x00);
        bool stop = false;
        long odd = 0, reads = 0;
        var reader = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                if (b.Unit.Read32(0x08) != capLow || b.Unit.Read32(0x10) != ecapLow || b.Unit.Read32(0x00) != ver
                    || (b.Unit.Read32(0x38) & 0x8000_0000) == 0) // FECTL.IM: set at reset, never cleared here
                {
                    Interlocked.Increment(ref odd);
                }

                reads++;
            }
        });
        reader.Start();
        for (int i = 0; i < 20_000 && Interlocked.Read(ref odd) == 0; i++)
        {
            b.Unit.Reset();
        }

        Volatile.Write(ref stop, true);
        Assert.True(reader.Join(TimeSpan.FromSeconds(30)));
        Assert.True(odd == 0, $"{odd} of {reads} register reads returned a value the register never held");
    }

    [Fact]
    public void Reset_returns_every_register_to_its_power_on_value_and_the_unit_stops_translating()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        (ulong dir, ulong sl) = b.SetupScalableDevice(Rid, pasid: 0, aw: 2, did: 3);
        b.Map(sl, 4, 0x5000, DataBase);
        b.Enable(scalable: true);
        b.EnableQueue(wide: true);
        Assert.Equal(DataBase + 8, b.Unit.Translate(Rid, null, 0x5008, 8, DmaAccess.Read).PhysicalAddress);
        Assert.True(b.Unit.Translate(Rid, null, 0x9000, 8, DmaAccess.Read).IsFault);
        Assert.NotEqual(0u, b.Fsts);

        b.Unit.Reset();

        using var memory = new PhysicalMemory(VtdBench.MemorySize);
        var powerOn = new VtdUnit(memory, b.Config);
        Assert.Equal(powerOn.SaveState().ToBytes(), b.Unit.SaveState().ToBytes());
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x5008, 8, DmaAccess.Read);
        Assert.Equal((VtdTranslationStatus.Translated, 0x5008UL), (t.Status, t.PhysicalAddress)); // TE off: untranslated

        // And a guest driver can bring it up again from scratch (the caches kept nothing).
        b.Map(sl, 4, 0x5000, DataBase + 0x1000);
        b.Enable(scalable: true);
        Assert.Equal(DataBase + 0x1008, b.Unit.Translate(Rid, null, 0x5008, 8, DmaAccess.Read).PhysicalAddress);
        GC.KeepAlive(dir);
    }

    [Fact]
    public void A_state_restores_only_into_a_unit_with_the_same_capabilities_and_bad_bytes_are_a_format_error()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        VtdUnitState state = b.Unit.SaveState();
        var other = new VtdUnit(b.Memory, VtdConfig.ScalableMode48Bit);
        ArgumentException e = Assert.Throws<ArgumentException>(() => other.RestoreState(state));
        Assert.Contains("CAP", e.Message, StringComparison.Ordinal);
        byte[] bytes = state.ToBytes();
        Assert.Throws<FormatException>(() => VtdUnitState.FromBytes(bytes.AsSpan(0, 20)));
        Assert.Throws<FormatException>(() => VtdUnitState.FromBytes(bytes.AsSpan(0, bytes.Length - 1)));
        bytes[0] ^= 1;
        Assert.Throws<FormatException>(() => VtdUnitState.FromBytes(bytes));
    }

    // What a guest does after the snapshot, and everything it can observe: DMA outcomes and bytes,
    // fault records and status, the queue head, the wait descriptor's status write, fault interrupts.
    private static List<string> RunAfterSnapshot(VtdUnit unit, PhysicalMemory memory, VtdBench b)
    {
        var seen = new List<string>();
        unit.FaultEvent += (_, e) => seen.Add(string.Create(CultureInfo.InvariantCulture, $"fault MSI 0x{e.Address:X}/0x{e.Data:X}"));
        for (ulong p = 0; p < 12; p++)
        {
            seen.Add(Show(unit, memory, (p << 12) | 0x10));
            seen.Add(string.Create(CultureInfo.InvariantCulture, $"FSTS 0x{unit.Read32(0x34):X}"));
        }

        for (int i = 0; i < 4; i++)
        {
            uint rec = b.FaultRecordBase + (uint)(16 * i);
            seen.Add(string.Create(CultureInfo.InvariantCulture, $"FRCD{i} 0x{unit.Read64(rec):X} 0x{unit.Read64(rec + 8):X}"));
        }

        unit.Write32(b.FaultRecordBase + 12, 0x8000_0000);  // clear record 0
        unit.Write32(0x34, 0xFF);                           // and the status bits
        seen.Add(string.Create(CultureInfo.InvariantCulture, $"FSTS 0x{unit.Read32(0x34):X}"));

        // A global IOTLB invalidation and a wait descriptor, at the queue tail the guest left.
        ulong iqa = unit.Read64(0x90) & ~0xFFFUL, tail = unit.Read64(0x88);
        ulong status = b.AllocFrame();
        memory.WriteUInt64(iqa + tail, 2 | (1UL << 4));
        memory.WriteUInt64(iqa + tail + 8, 0);
        memory.WriteUInt64(iqa + tail + 16, 5 | (1UL << 5) | (0x600DUL << 32));
        memory.WriteUInt64(iqa + tail + 24, status);
        unit.Write64(0x88, tail + 32);
        seen.Add(string.Create(CultureInfo.InvariantCulture, $"IQH 0x{unit.Read64(0x80):X}, status 0x{memory.ReadUInt64(status):X}"));
        memory.WriteUInt64(status, 0);
        seen.Add(Show(unit, memory, 0x7FF8));
        seen.Add(Show(unit, memory, 0x9000));
        return seen;
    }

    private static DmaResult Read(VtdUnit unit, ulong iova)
    {
        Span<byte> bytes = stackalloc byte[8];
        return unit.Transfer(Rid, null, iova, bytes, DmaAccess.Read);
    }

    private static string Show(VtdUnit unit, PhysicalMemory memory, ulong iova)
    {
        Span<byte> bytes = stackalloc byte[8];
        DmaResult r = unit.Transfer(Rid, null, iova, bytes, DmaAccess.Read);
        GC.KeepAlive(memory);
        return string.Create(CultureInfo.InvariantCulture, $"0x{iova:X}: {r.Status} 0x{r.Address:X} reason {r.FaultReason} bytes {BitConverter.ToUInt64(bytes):X}");
    }
}
