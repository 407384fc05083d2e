using System.Buffers.Binary;
using System.Collections.Concurrent;
using CsCheck;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.FirstLevelTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// SVA DMA from two threads while the process unmaps its pages: first-level reads are served from the
/// unit's memo of IOTLB hits once warm, and the mmu notifier's P_IOTLB flush retires it, so a read that
/// starts after <see cref="ProcessAddressSpace.Munmap"/> returned faults, and one that succeeds reads
/// the page's own bytes.
/// </summary>
public sealed class SvaMemoRaceTests
{
    private const ulong Page = 4096;
    private const int Pages = 8;

    [Fact]
    public void A_read_started_after_munmap_returned_faults_and_earlier_ones_read_the_pages_own_bytes()
    {
        Gen.Int[0, Pages - 1].Array[1, Pages].Select(a => a.Distinct().ToArray()).Sample(order =>
        {
            using DriverBed f = NewFl("Fl48", FirstLevelPolicy.AllWhenEveryUnitHasFlts);
            PciDevice dev = f.AuxParent("0000:00:02.0");
            using var mm = new ProcessAddressSpace(HostPageAllocator.ForPlatform(f.Platform), "p");
            ulong va = mm.Mmap(Pages * Page);
            for (int i = 0; i < Pages; i++)
            {
                Assert.Equal(Errno.None, mm.Write(va + ((ulong)i * Page), BitConverter.GetBytes(Stamp(i))));
            }

            Assert.Equal(Errno.None, f.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
            uint pasid = f.Iommu.SvaGetPasid(h!);
            for (int round = 0; round < 2; round++) // the second round hits the IOTLB and fills the memo
            {
                for (int i = 0; i < Pages; i++)
                {
                    Assert.Null(Check(dev, pasid, va, i, unmapped: false));
                }
            }

            int[] gone = new int[Pages]; // 1 once Munmap of the page returned
            bool done = false;
            int[] reads = new int[2];
            var wrong = new ConcurrentQueue<string>();
            var errors = new ConcurrentQueue<Exception>();
            Thread[] readers = [.. Enumerable.Range(0, 2).Select(t => new Thread(() =>
            {
                try
                {
                    var rng = new Random(t);
                    while (!Volatile.Read(ref done))
                    {
                        int i = rng.Next(Pages);
                        string? w = Check(dev, pasid, va, i, unmapped: Volatile.Read(ref gone[i]) != 0);
                        if (w != null)
                        {
                            wrong.Enqueue(w);
                        }

                        Interlocked.Increment(ref reads[t]);
                    }
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                }
            }) { IsBackground = true })];
            foreach (Thread t in readers)
            {
                t.Start();
            }

            try
            {
                foreach (int i in order)
                {
                    int before = Volatile.Read(ref reads[0]) + Volatile.Read(ref reads[1]);
                    SpinWait.SpinUntil(() => Volatile.Read(ref reads[0]) + Volatile.Read(ref reads[1]) >= before + 16, TimeSpan.FromSeconds(5));
                    mm.Munmap(va + ((ulong)i * Page), Page);
                    Volatile.Write(ref gone[i], 1);
                }

                int after = Volatile.Read(ref reads[0]) + Volatile.Read(ref reads[1]);
                SpinWait.SpinUntil(() => Volatile.Read(ref reads[0]) + Volatile.Read(ref reads[1]) >= after + 64, TimeSpan.FromSeconds(5));
            }
            finally
            {
                Volatile.Write(ref done, true);
                foreach (Thread t in readers)
                {
                    Assert.True(t.Join(TimeSpan.FromSeconds(30)));
                }
            }

            Assert.Empty(errors);
            Assert.Empty(wrong);
            foreach (int i in order)
            {
                Assert.Null(Check(dev, pasid, va, i, unmapped: true));
            }
        }, iter: 10, threads: 1);
    }

    private static string? Check(PciDevice dev, uint pasid, ulong va, int page, bool unmapped)
    {
        Span<byte> b = stackalloc byte[8];
        DmaResult r = dev.DmaRead(pasid, va + ((ulong)page * Page), b);
        ulong data = BinaryPrimitives.ReadUInt64LittleEndian(b);
        if (unmapped)
        {
            return r.IsOk ? $"page {page}: read 0x{data:X} after its munmap returned" : null;
        }

        return !r.IsOk || data == Stamp(page) ? null : $"page {page}: read 0x{data:X}, not its stamp";
    }

    private static ulong Stamp(int page) => 0x5A5A_0000_0000_0000UL | (uint)page;
}
