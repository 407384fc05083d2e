using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Iommu.Devices;

/// <content>The device's address translation cache (ATC).</content>
public sealed partial class PciDevice
{
    /// <summary>
    /// The ATC: 256 translations, 64 sets of 4 ways, one entry per (PASID tag, 4 KiB page) with the
    /// completion's range (so an invalidation of any part of a large page drops it). A hit reads one
    /// set without a lock; fills and invalidations are made under the device's ATS lock.
    /// </summary>
    /// <remarks>
    /// <para>Shape: the set of a page is its page number plus a fixed multiple of the tag, so up to 256
    /// consecutive pages of one PASID all fit; a fill into a full set replaces its ways in turn (a
    /// device may forget a translation at any time). Before, the ATC was a 256-entry dictionary that
    /// dropped everything when full; both hold every page of a run of up to 256 pages.</para>
    /// <para>Ordering: each entry is a seqlock (odd while a writer changes it); a reader uses an entry
    /// only when it read the same even count before and after the fields. Writers hold the ATS lock,
    /// so they never meet each other. An invalidation clears its entries before it returns, so a
    /// read that starts after the invalidate request was delivered (the unit delivers it while it
    /// executes the descriptor, before the wait descriptor behind it completes) sees the entry empty
    /// or changed and does not use it. A fill races an invalidation differently: its translation
    /// request may have been answered from tables the invalidation was about to retire, so every
    /// invalidation (and clear) moves <see cref="Generation"/> under the lock, and a fill whose
    /// request began under another generation is dropped (the access it was made for still completes,
    /// as a request in flight during the invalidation).</para>
    /// </remarks>
    private sealed class Atc
    {
        private const int Ways = 4;
        private const int Sets = 64;
        private const uint TagStride = 0x25; // odd: tags spread across sets

        private readonly Entry[] _entries = new Entry[Sets * Ways];
        private readonly byte[] _victim = new byte[Sets];
        private int _count;
        private int _generation;

        /// <summary>Translations held.</summary>
        public int Count => Volatile.Read(ref _count);

        /// <summary>Moved by every invalidation and clear: read it before a translation request and pass it to <see cref="Fill"/>.</summary>
        public uint Generation => (uint)Volatile.Read(ref _generation);

        /// <summary>The physical address of <paramref name="addr"/> when a translation of its page allows the access.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool TryGet(uint tag, ulong addr, bool write, out ulong pa)
        {
            ulong key = (addr >> 12) + 1;
            ref Entry e = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_entries), SetOf(tag, addr >> 12) * Ways);
            ulong need = write ? ReadBit | WriteBit : ReadBit;
            for (int w = 0; w < Ways; w++, e = ref Unsafe.Add(ref e, 1))
            {
                int seq = Volatile.Read(ref e.Seq);
                ulong k = e.Key;
                uint t = e.Tag;
                ulong output = e.Output;
                Volatile.ReadBarrier();
                if (k >> 2 == key && t == tag && (seq & 1) == 0 && Volatile.Read(ref e.Seq) == seq)
                {
                    if ((k & need) != need)
                    {
                        break; // one entry per page: no other way holds it
                    }

                    pa = output + (addr & 0xFFF);
                    return true;
                }
            }

            pa = 0;
            return false;
        }

        /// <summary>Caches the page of <paramref name="addr"/> (caller holds the ATS lock) unless an invalidation came after <paramref name="generation"/> was read.</summary>
        public void Fill(uint tag, ulong addr, ulong rangeBase, ulong rangeSize, ulong output, bool read, bool write, uint generation)
        {
            if ((uint)_generation != generation)
            {
                return;
            }

            ulong key = (addr >> 12) + 1;
            int set = SetOf(tag, addr >> 12);
            int slot = -1;
            for (int w = 0; w < Ways; w++)
            {
                ref Entry e = ref _entries[(set * Ways) + w];
                if (e.Key >> 2 == key && e.Tag == tag)
                {
                    slot = w;
                    break;
                }

                if (slot < 0 && e.Key == 0)
                {
                    slot = w;
                }
            }

            if (slot < 0)
            {
                slot = _victim[set];
                _victim[set] = (byte)((slot + 1) & (Ways - 1));
            }

            ref Entry x = ref _entries[(set * Ways) + slot];
            if (x.Key == 0)
            {
                Volatile.Write(ref _count, _count + 1);
            }

            Write(ref x, (key << 2) | (read ? ReadBit : 0) | (write ? WriteBit : 0), tag, output, rangeBase, rangeSize);
        }

        /// <summary>Drops every translation of <paramref name="tag"/> (or of every tag) overlapping [<paramref name="first"/>, <paramref name="last"/>] (caller holds the ATS lock).</summary>
        public void Invalidate(bool allTags, uint tag, ulong first, ulong last)
        {
            Interlocked.Increment(ref _generation);
            if (_count == 0)
            {
                return;
            }

            for (int i = 0; i < _entries.Length; i++)
            {
                ref Entry e = ref _entries[i];
                if (e.Key != 0 && (allTags || e.Tag == tag) && e.Base <= last && e.Base + e.Size - 1 >= first)
                {
                    Remove(ref e);
                }
            }
        }

        /// <summary>Drops everything (caller holds the ATS lock).</summary>
        public void Clear()
        {
            Interlocked.Increment(ref _generation);
            for (int i = 0; i < _entries.Length && _count != 0; i++)
            {
                if (_entries[i].Key != 0)
                {
                    Remove(ref _entries[i]);
                }
            }
        }

        private const ulong ReadBit = 1;
        private const ulong WriteBit = 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static int SetOf(uint tag, ulong page) => (int)((page + (tag * TagStride)) & (Sets - 1));

        private void Remove(ref Entry e)
        {
            Write(ref e, 0, 0, 0, 0, 0);
            Volatile.Write(ref _count, _count - 1);
        }

        // Seqlock write: odd count (a full fence, so no field store passes it), fields, even count.
        private static void Write(ref Entry e, ulong key, uint tag, ulong output, ulong rangeBase, ulong rangeSize)
        {
            int seq = e.Seq;
            Interlocked.Exchange(ref e.Seq, seq + 1);
            e.Key = key;
            e.Tag = tag;
            e.Output = output;
            e.Base = rangeBase;
            e.Size = rangeSize;
            Volatile.Write(ref e.Seq, seq + 2);
        }

        [StructLayout(LayoutKind.Sequential)]
        private struct Entry
        {
            public int Seq;
            public uint Tag;
            public ulong Key;    // (page number + 1) << 2 | W | R; 0: empty
            public ulong Output; // physical address of the page
            public ulong Base;   // the completion's range
            public ulong Size;
        }
    }
}
