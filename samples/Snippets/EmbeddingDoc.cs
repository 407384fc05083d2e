// snippet-begin: embedding-create
using Iommu.Devices;
using Iommu.Memory;
using Iommu.VtD.Hardware;
// snippet-end: embedding-create
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Snippets;

/// <summary>docs/embedding-vtd.md: a guest driver that programs the unit only through MMIO and guest RAM.</summary>
internal static unsafe class EmbeddingDoc
{
    /// <summary>What the document says each call gives.</summary>
    public sealed record Outcome(
        DmaResult Write, DmaResult Read, DmaResult Gather, string GatheredBytes, string ReadAfterRestore,
        DmaResult IntoHole, DmaResult Unmapped, int FaultMsisWhileMasked, int FaultMsisAfterUnmask, ulong FaultRecordReason,
        long IgnoredAccesses, DmaResult AfterRestore, ulong FectlAfterReset);

    public static Outcome Run()
    {
        const ulong dmarBase = 0xFED9_0000;                 // the DRHD's register base
        nint hostBase = (nint)NativeMemory.AlignedAlloc(0xA000_0000, 2 << 20);   // committed on first touch
        ILogger myLogger = NullLogger.Instance;
        try
        {
            // snippet-begin: embedding-create
            // Guest RAM the emulator owns: 1.5 GiB below the PCI hole, the rest above 4 GiB (see "Memory" below).
            var ram = new PhysicalMemory(0x1_4000_0000, [
                new HostMemoryRange(0x0, 0x6000_0000, hostBase),
                new HostMemoryRange(0x1_0000_0000, 0x4000_0000, hostBase + 0x6000_0000),
            ]);
            var unit = new VtdUnit(ram, VtdConfig.Legacy48Bit, segment: 0, logger: myLogger);
            // snippet-end: embedding-create
            using var _ = ram;

            // The vCPU's access to the unit's register window, as the emulator's MMIO dispatch routes it.
            ulong Mmio(ulong address, int size, bool isWrite, ulong value = 0)
            {
                // snippet-begin: embedding-mmio
                if (isWrite)
                {
                    unit.MmioWrite(address - dmarBase, size, value);
                }
                else
                {
                    value = unit.MmioRead(address - dmarBase, size);
                }
                // snippet-end: embedding-mmio
                return value;
            }

            // The guest's tables in its RAM: legacy root and context table, 4-level second-level tables
            // mapping IOVA 0x10000 to 0x4000_0000 and 0x11000 into the PCI hole (0x7000_0000).
            const ulong root = 0x10_0000, context = 0x11_0000, l4 = 0x12_0000, l3 = 0x13_0000, l2 = 0x14_0000, l1 = 0x15_0000;
            foreach (ulong table in new[] { root, context, l4, l3, l2, l1 })
            {
                ram.Write(table, new byte[4096]);          // guest RAM need not be zeroed; the guest clears its tables
            }

            ushort requesterId = 0x0020;                   // 00:04.0
            ram.WriteUInt64(root, context | 1);            // bus 0: present
            ram.WriteUInt64(context + (0x20 * 16), l4 | 1);          // present, TT=00
            ram.WriteUInt64(context + (0x20 * 16) + 8, (1UL << 8) | 2); // DID 1, AW=2 (4 levels)
            ram.WriteUInt64(l4, l3 | 3);
            ram.WriteUInt64(l3, l2 | 3);
            ram.WriteUInt64(l2, l1 | 3);
            ram.WriteUInt64(l1 + (0x10 * 8), 0x4000_0000 | 3);
            ram.WriteUInt64(l1 + (0x11 * 8), 0x7000_0000 | 3);

            int msis = 0;
            unit.FaultEvent += (_, _) => Interlocked.Increment(ref msis);
            Mmio(dmarBase + VtdRegister.Rtaddr, 8, isWrite: true, root);
            Mmio(dmarBase + VtdRegister.Gcmd, 4, isWrite: true, VtdRegister.GcmdSrtp);
            Mmio(dmarBase + VtdRegister.Gcmd, 4, isWrite: true, VtdRegister.GcmdTe);

            ulong iova = 0x10040;
            ReadOnlySpan<byte> source = "hello"u8;
            Span<byte> destination = stackalloc byte[5];
            DmaSegment[] segments = [new(0x10043, 2), new(0x10040, 3)];   // "lo", then "hel"
            // snippet-begin: embedding-dma
            DmaResult w = unit.Write(requesterId, pasid: null, iova, source);      // ReadOnlySpan<byte>
            DmaResult r = unit.Read(requesterId, pasid: null, iova, destination);  // Span<byte>
            DmaResult g = unit.Gather(requesterId, null, segments, destination);   // DmaSegment(iova, length)s, in order
            // snippet-end: embedding-dma
            string gathered = System.Text.Encoding.ASCII.GetString(destination);

            DmaResult hole = unit.Write(requesterId, null, 0x10FF0, new byte[0x20]);   // runs into the page in the hole
            DmaResult unmapped = unit.Write(requesterId, null, 0x20000, source);
            int whileMasked = msis;                        // FECTL.IM is set at power-on
            Mmio(dmarBase + VtdRegister.Fectl, 4, isWrite: true, 0);   // unmasking sends the pending fault event
            ulong frcdOffset = ((Mmio(dmarBase + VtdRegister.Cap, 8, isWrite: false) >> 24) & 0x3FF) * 16;
            ulong reason = (Mmio(dmarBase + frcdOffset + 8, 8, isWrite: false) >> VtdRegister.FrcdFrShift) & 0xFF;

            Mmio(dmarBase + 3, 2, isWrite: false);         // misaligned: reads 0, counted
            Mmio(dmarBase + unit.RegisterBlockSize, 4, isWrite: true, 1);  // past the block: ignored, counted

            byte[] snapshot = unit.SaveState().ToBytes();
            var restored = new VtdUnit(ram, VtdConfig.Legacy48Bit);
            restored.RestoreState(VtdUnitState.FromBytes(snapshot));
            DmaResult afterRestore = restored.Read(requesterId, null, iova, destination);
            string read = System.Text.Encoding.ASCII.GetString(destination);

            unit.Reset();
            return new Outcome(w, r, g, gathered, read, hole, unmapped, whileMasked, msis, reason,
                unit.IgnoredRegisterAccesses, afterRestore, unit.MmioRead(VtdRegister.Fectl, 4));
        }
        finally
        {
            NativeMemory.AlignedFree((void*)hostBase);
        }
    }
}
