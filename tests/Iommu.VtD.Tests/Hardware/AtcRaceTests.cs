using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The device's ATC is read without a lock: a translated read that starts after a device-TLB
/// invalidation returned never uses a translation the invalidation removed, also when a translation
/// request that began before the invalidation fills the ATC after it (pasid-sva.md §1.7).
/// </summary>
public class AtcRaceTests
{
    private const uint Pasid = 5;
    private const ushort Did = 9;
    private const ulong Va = 0x7F00_0000_2000;
    private const int Frames = 64;

    // A set: the unit's walk never updates the leaf the test rewrites (a failed A update is fault 0x91).
    private const ulong Leaf = P | RW | US | A;

    [Fact]
    public void A_read_after_the_device_tlb_invalidation_never_reaches_the_old_page()
    {
        using var r = new AtsRig();
        r.Fl.Entry(Pasid, Did);
        ulong frames = r.B.AllocFrames(Frames);
        ulong FrameOf(long gen) => frames + ((ulong)(gen % Frames) << 12);
        r.B.Memory.WriteUInt64(FrameOf(0), 0);
        r.Fl.Map(Va, FrameOf(0), leaf: Leaf);

        long published = 0; // generations whose invalidation completed
        bool stop = false;
        string? failure = null;
        var reader = new Thread(() =>
        {
            byte[] buf = new byte[8];
            while (!Volatile.Read(ref stop) && failure is null)
            {
                long before = Volatile.Read(ref published);
                Iommu.Devices.DmaResult d = r.Dev.AtsDmaRead(Pasid, Va, buf);
                if (!d.IsOk)
                {
                    failure = $"an ATS read failed: {d}";
                    break;
                }

                long seen = BitConverter.ToInt64(buf);
                if (seen < before)
                {
                    failure = $"a read started after generation {before}'s invalidation reached generation {seen}'s page";
                }
            }
        });
        reader.Start();

        DateTime end = DateTime.UtcNow.AddSeconds(1.5);
        for (long gen = 1; DateTime.UtcNow < end && failure is null; gen++)
        {
            r.B.Memory.WriteUInt64(FrameOf(gen), (ulong)gen);
            r.Fl.Map(Va, FrameOf(gen), leaf: Leaf);

            // As the kernel after a PTE change: the PASID's IOTLB entries, then the device-TLB.
            r.B.Submit(6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)Pasid << 32));
            r.FlushPasidDevTlb(Pasid, Va, 0);
            Volatile.Write(ref published, gen);
        }

        Volatile.Write(ref stop, true);
        reader.Join();
        Assert.True(failure is null, failure);
    }
}
