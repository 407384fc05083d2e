using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// An emulator hands the unit's MMIO window and its table memory to a guest: nothing the guest
/// controls — register offsets, access sizes, alignment, values, and the bytes of the tables and the
/// invalidation queue those values point at — may throw into the emulator (issue 17).
/// </summary>
public sealed class GuestMmioFuzzTests
{
    // Offsets a guest driver really uses, so that random sequences enable translation, point the
    // root table and queue at random bytes, submit descriptors and clear faults; plus anything else.
    private static readonly uint[] Registers =
    [
        0x00, 0x08, 0x10, 0x18, 0x1C, 0x20, 0x28, 0x34, 0x38, 0x3C, 0x40, 0x44,
        0x80, 0x88, 0x90, 0x9C, 0xA0, 0xA4, 0xA8, 0xAC, 0xB0, 0xB8,
        VtdConfig.IotlbRegisterOffset, VtdConfig.IotlbRegisterOffset + 8,
        VtdConfig.FaultRecordingRegisterOffset, VtdConfig.FaultRecordingRegisterOffset + 8,
        VtdConfig.FaultRecordingRegisterOffset + 0x18, VtdConfig.FaultRecordingRegisterOffset + 0x1C,
    ];

    private const ulong MemorySize = 4UL << 20;    // small, so random pointers often leave memory
    private const int Accesses = 600;              // per sequence; × 200 sequences ≥ 10^5

    /// <summary>One step of a guest: an MMIO access, a device request, or a scribble on table memory.</summary>
    public readonly record struct Step(int Kind, ulong Offset, int Size, ulong Value, ulong Address);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Random_guest_mmio_and_table_bytes_never_throw_and_the_unit_stays_consistent(bool scalable)
    {
        Gen<Step> step = Gen.Frequency(
            (6, Gen.Select(Gen.Int[0, Registers.Length - 1], Gen.Int[0, 3], Gen.ULong, Gen.Int[0, 9])
                .Select(t => new Step(0, Registers[t.Item1] + (t.Item4 == 0 ? (ulong)t.Item2 : 0), Size(t.Item2), Pointer(t.Item3, t.Item4), 0))),
            (1, Gen.Select(Gen.ULong[0, 0x1_1000], Gen.Int[0, 9], Gen.ULong)
                .Select(t => new Step(0, t.Item1, t.Item2, t.Item3, 0))),
            (3, Gen.Select(Gen.ULong, Gen.Int[0, 3], Gen.UInt[0, 0xF_FFFF], Gen.Bool)
                .Select(t => new Step(1, t.Item1 % 0x300, t.Item2, t.Item3, Iova(t.Item1, t.Item4)))),
            (2, Gen.Select(Gen.ULong[0, (MemorySize / 8) - 1], Gen.ULong)
                .Select(t => new Step(2, 0, 8, t.Item2, t.Item1 * 8))));

        step.Array[Accesses].Sample(
            steps => Run(scalable, steps),
            iter: 200,
            print: steps => string.Join(' ', steps.Take(40).Select(s => s.ToString())));

        static int Size(int i) => i switch { 0 => 4, 1 => 8, 2 => 2, _ => 1 };

        // Register values: often a plausible pointer into (or just past) memory, sometimes anything.
        static ulong Pointer(ulong v, int how) => how switch
        {
            < 5 => (v % MemorySize) & ~0xFFFUL | (v >> 60),
            < 7 => MemorySize + ((v & 0xFF) << 12),
            _ => v,
        };

        static ulong Iova(ulong v, bool low) => low ? v % (4UL << 20) : v;
    }

    private static void Run(bool scalable, Step[] steps)
    {
        using var memory = new PhysicalMemory(MemorySize);
        var config = scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit;
        var unit = new VtdUnit(memory, config);
        ulong cap = unit.Read64(0x08), ecap = unit.Read64(0x10);
        uint ver = unit.Read32(0x00);
        long ignored = 0;
        Span<byte> buffer = stackalloc byte[64];
        for (int i = 0; i < steps.Length; i++)
        {
            Step s = steps[i];
            try
            {
                switch (s.Kind)
                {
                    case 0 when (s.Value & 1) == 0:
                        unit.MmioWrite(s.Offset, s.Size, s.Value);
                        ignored += Counts(unit, s) ? 1 : 0;
                        break;
                    case 0:
                        _ = unit.MmioRead(s.Offset, s.Size);
                        ignored += Counts(unit, s) ? 1 : 0;
                        break;
                    case 1:
                        uint? pasid = scalable && s.Size >= 2 ? (uint)(s.Value & 0xF_FFFF) : null;
                        ushort sid = (ushort)s.Offset;
                        if ((s.Size & 1) == 0)
                        {
                            _ = unit.Translate(sid, pasid, s.Address & ~7UL, 8, DmaAccess.Read); // one request stays in a page (a caller rule)
                        }
                        else
                        {
                            _ = unit.Transfer(sid, pasid, s.Address, buffer, (s.Value & 2) != 0 ? DmaAccess.Write : DmaAccess.Read);
                        }

                        break;
                    default:
                        memory.WriteUInt64(s.Address, s.Value);
                        break;
                }
            }
            catch (Exception e)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Step {i} ({s}) threw: {e}"));
            }

            // What the guest can read stays what the hardware defines.
            Check(unit.Read64(0x08) == cap && unit.Read64(0x10) == ecap && unit.Read32(0x00) == ver, i, s, "CAP, ECAP or VER changed");
            ulong iqh = unit.Read64(0x80), iqa = unit.Read64(0x90);
            int entryShift = scalable && (iqa & 0x800) != 0 ? 5 : 4;
            Check((iqh & ((1UL << entryShift) - 1)) == 0 && iqh >> entryShift < (256UL << (int)(iqa & 7)), i, s, $"IQH 0x{iqh:X} is not a descriptor of the queue (IQA 0x{iqa:X})");
            uint fsts = unit.Read32(0x34);
            Check(((fsts >> 8) & 0xFF) < (uint)config.FaultRecordCount, i, s, $"FSTS.FRI {(fsts >> 8) & 0xFF} is not a fault record");
            Check(unit.IgnoredRegisterAccesses == ignored, i, s, $"{unit.IgnoredRegisterAccesses} accesses ignored, expected {ignored}");
        }
    }

    // Whether the unit must ignore this access: not 4 or 8 bytes, misaligned, or past the block.
    private static bool Counts(VtdUnit unit, Step s) =>
        !((s.Size == 4 || s.Size == 8) && s.Offset % (ulong)s.Size == 0 && s.Offset + (ulong)s.Size <= unit.RegisterBlockSize);

    private static void Check(bool ok, int i, Step s, string what)
    {
        if (!ok)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"After step {i} ({s}): {what}."));
        }
    }
}
