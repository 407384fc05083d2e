using CsCheck;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Queued invalidation over random queues (QS, DW, starting head, wrap) and random submissions mixing valid
/// and invalid descriptors, against a reference model of the ring: which status writes happened and in what
/// order, IQH, FSTS.IQE and IQERCD.IQEI after every register write software makes.
/// </summary>
public sealed class InvalidationQueuePropertyTests
{
    private const uint Iqe = 1u << 4;
    private const ulong FnWait = 5 | (1UL << 6); // wait, FN only: executes and writes nothing

    // What the reference model knows of one slot: 0 for a valid descriptor, else the IQEI it must raise;
    // a valid wait with a status write names its word and data.
    private readonly record struct Slot(int Iqei, ulong StatusAddress, uint Data);

    /// <summary>
    /// Descriptors before an invalid one execute in order; the unit stops with IQH at the invalid one, FSTS.IQE
    /// set and IQEI naming the error, fetches nothing while IQE is set (tail writes included), and once software
    /// clears IQE goes on from IQH without a tail write: the slot software rewrote (with its wait, as Linux's
    /// qi_check_fault does) or, when left alone, the same invalid descriptor again. A tail beyond the queue
    /// (IQEI 1) or a misaligned tail in a 256-bit queue (IQEI 6) fetches nothing until software writes a good one.
    /// </summary>
    [Fact]
    public void Property_the_queue_stops_at_an_invalid_descriptor_and_resumes_from_iqh_once_iqe_is_cleared()
    {
        Gen.Select(Gen.Int[0, 7], Gen.Bool, Gen.UInt, Gen.Int[1, 14]).Sample((qs, wide, seed, steps) => Run(qs, wide, seed, steps), iter: 120);
    }

    private static void Run(int qs, bool wide, uint seed, int steps)
    {
        var rng = new Random((int)seed);
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        int shift = wide ? 5 : 4;
        int size = 1 << shift;
        int entries = (4096 << qs) >> shift;
        ulong queue = b.AllocFrames(1 << qs);
        ulong statusBase = b.AllocFrames(4); // one word per status-writing wait, 4096 of them
        ulong shared = b.AllocFrame();        // the word waits write in turn: the last one to run wins
        var slots = new Slot[entries];
        var written = new Dictionary<ulong, uint>();
        uint lastShared = 0;
        uint seq = 0;

        // Reference state: head and tail indexes, IQE and the IQEI it recorded.
        int head = 0, tail = 0, iqei = 0;
        bool iqe = false;

        b.Unit.Write64(0x88, 0);
        b.Unit.Write64(0x90, queue | (wide ? 1UL << 11 : 0) | (uint)qs);
        b.Gcmd(1u << 26);

        void Put(int index, ulong q0, ulong q1 = 0, ulong q2 = 0, ulong q3 = 0)
        {
            ulong at = queue + ((ulong)index * (ulong)size);
            b.Memory.WriteUInt64(at, q0);
            b.Memory.WriteUInt64(at + 8, q1);
            if (wide)
            {
                b.Memory.WriteUInt64(at + 16, q2);
                b.Memory.WriteUInt64(at + 24, q3);
            }
        }

        // A valid descriptor: half of them waits that write a status word (their own or the shared one).
        Slot PutValid(int index)
        {
            int kind = rng.Next(wide ? 8 : 6);
            if (kind < 3)
            {
                seq++;
                ulong address = kind == 0 ? shared : statusBase + (4UL * (seq & 0xFFF));
                Put(index, 5 | (1UL << 5) | ((ulong)seq << 32), address);
                return new Slot(0, address, seq);
            }

            ushort did = (ushort)rng.Next(1, 256);
            switch (kind)
            {
                case 3: Put(index, 2 | (1UL << 4)); break;                                   // IOTLB, global
                case 4: Put(index, 1 | (2UL << 4) | ((ulong)did << 16)); break;              // context cache, domain
                case 5: Put(index, FnWait); break;                                           // wait, FN only
                case 6: Put(index, 7 | ((ulong)did << 16) | ((ulong)rng.Next(1, 1 << 20) << 32)); break; // PASID cache, domain
                default: Put(index, 6 | (2UL << 4) | ((ulong)did << 16) | ((ulong)rng.Next(1, 1 << 20) << 32)); break; // P_IOTLB, whole PASID
            }

            return default;
        }

        // An invalid descriptor and the IQEI the unit must record for it.
        Slot PutInvalid(int index)
        {
            int kind = rng.Next(7);
            switch (kind)
            {
                case 0: Put(index, 0); return new Slot(3, 0, 0);                                        // type 0
                case 1: Put(index, (ulong)rng.Next(10, 16)); return new Slot(3, 0, 0);                  // unknown type
                case 2: Put(index, 1 | (1UL << 4) | ((ulong)rng.Next(1, 8) << 9)); return new Slot(3, 0, 0); // type bits 11:9
                case 3: Put(index, 2); return new Slot(4, 0, 0);                                        // IOTLB, G = 0
                case 4: Put(index, 1 | (1UL << 4), 1UL << rng.Next(64)); return new Slot(4, 0, 0);     // context cache, q1 reserved
                case 5: Put(index, 5 | (1UL << 5), statusBase | 1); return new Slot(4, 0, 0);            // wait, STADDR bits 1:0
                default:
                    if (!wide)
                    {
                        Put(index, (rng.Next(2) == 0 ? 6 | (2UL << 4) : 7) | (1UL << 16));             // 256-bit type in a 128-bit queue
                        return new Slot(5, 0, 0);
                    }

                    Put(index, 2 | (1UL << 4), 0, rng.Next(2) == 0 ? 1UL << rng.Next(64) : 0, 1UL << rng.Next(64)); // q2/q3 reserved
                    return new Slot(4, 0, 0);
            }
        }

        // The unit as the reference runs it: from head up to tail, stopping at the first invalid slot.
        void Fetch()
        {
            if (iqe)
            {
                return;
            }

            while (head != tail)
            {
                Slot s = slots[head];
                if (s.Iqei != 0)
                {
                    iqe = true;
                    iqei = s.Iqei;
                    return;
                }

                if (s.StatusAddress == shared)
                {
                    lastShared = s.Data;
                }
                else if (s.StatusAddress != 0)
                {
                    written[s.StatusAddress] = s.Data;
                }

                head = (head + 1) % entries;
            }
        }

        void WriteTail(ulong value)
        {
            if (rng.Next(2) == 0)
            {
                b.Unit.Write64(0x88, value);
            }
            else
            {
                b.Unit.Write32(0x88, (uint)value);
            }
        }

        void Check(string what)
        {
            string at = $"{what} (QS {qs}, DW {(wide ? 1 : 0)}, head {head}, tail {tail})";
            Assert.True(iqe == ((b.Fsts & Iqe) != 0), $"FSTS.IQE after {at}");
            Assert.True((ulong)head << shift == b.Unit.Read64(0x80), $"IQH 0x{b.Unit.Read64(0x80):x} after {at}");
            if (iqe)
            {
                Assert.True((ulong)iqei == (b.Unit.Read64(0xB0) & 0xF), $"IQEI {b.Unit.Read64(0xB0) & 0xF}, expected {iqei}, after {at}");
            }

            Assert.True(lastShared == b.Memory.ReadUInt32(shared), $"last status write to the shared word after {at}");
            for (uint n = 1; n <= seq; n++)
            {
                ulong address = statusBase + (4UL * (n & 0xFFF));
                Assert.True(written.GetValueOrDefault(address) == b.Memory.ReadUInt32(address), $"status word 0x{address:x} after {at}");
            }
        }

        // Move the head to a random slot first so that later submissions wrap the ring anywhere.
        int start = rng.Next(entries);
        for (int i = 0; i < start; i++)
        {
            Put(i, FnWait);
        }

        tail = start;
        WriteTail((ulong)tail << shift);
        Fetch();
        Check("the walk to the starting slot");

        for (int step = 0; step < steps; step++)
        {
            int action = rng.Next(10);
            if (action < 6)
            {
                // A submission of 1..24 descriptors (never filling the ring), some of them invalid.
                int pending = (tail - head + entries) % entries;
                int count = Math.Min(rng.Next(1, 25), entries - 1 - pending);
                double bad = rng.NextDouble() * 0.4;
                for (int i = 0; i < count; i++)
                {
                    slots[tail] = rng.NextDouble() < bad ? PutInvalid(tail) : PutValid(tail);
                    tail = (tail + 1) % entries;
                }

                WriteTail((ulong)tail << shift);
                Fetch();
                Check($"a submission of {count}");
            }
            else if (action < 8 && iqe)
            {
                // Recovery: usually Linux's (the bad slot becomes a status-writing wait), else a fix by some other
                // valid descriptor, or no fix at all (the unit meets the same descriptor again).
                int how = rng.Next(4);
                if (how < 2)
                {
                    seq++;
                    ulong address = how == 0 ? shared : statusBase + (4UL * (seq & 0xFFF));
                    Put(head, 5 | (1UL << 5) | ((ulong)seq << 32), address);
                    slots[head] = new Slot(0, address, seq);
                }
                else if (how == 2)
                {
                    slots[head] = PutValid(head);
                }

                b.Unit.Write32(0x34, Iqe);
                iqe = false;
                Fetch();
                Check(how == 3 ? "clearing IQE without fixing the slot" : "fixing the bad slot and clearing IQE");
            }
            else if (!iqe)
            {
                // A bad tail: beyond the queue (when the field can name one) or, in a 256-bit queue, misaligned.
                bool misaligned = wide && (qs == 7 || rng.Next(2) == 0);
                if (!misaligned && qs == 7 && !wide)
                {
                    continue; // a 128-bit queue of 2^15 entries: every tail is inside it
                }

                int maxIndex = wide ? 1 << 14 : 1 << 15;
                ulong badTail = misaligned ? ((ulong)tail << shift) | 0x10 : (ulong)rng.Next(entries, maxIndex) << shift;
                WriteTail(badTail);
                iqe = true;
                iqei = misaligned ? 6 : 1;
                Check(misaligned ? "a misaligned tail" : "a tail beyond the queue");

                // Software puts its tail back, then clears IQE: the queue goes on as before.
                WriteTail((ulong)tail << shift);
                Check("a good tail while IQE is set");
                b.Unit.Write32(0x34, Iqe);
                iqe = false;
                Fetch();
                Check("clearing IQE after a tail error");
            }
        }
    }
}
