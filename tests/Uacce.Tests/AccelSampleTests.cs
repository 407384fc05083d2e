using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using UacceAccel;

namespace Uacce.Tests;

/// <summary>
/// The sample accelerator: two ordinary processes open /dev/accel-0, map their queue and submit descriptors with their
/// own virtual addresses; each queue's DMA carries its opener's PASID and reaches only that process's pages.
/// </summary>
public sealed class AccelSampleTests
{
    private const ulong Page = 4096;

    [Fact]
    public void Two_processes_copy_within_their_own_address_spaces_and_never_reach_each_other()
    {
        using AccelSystem sys = AccelSystem.Create();
        Assert.Equal(UacceDeviceFlags.Sva, sys.Accel.Flags);
        using ProcessAddressSpace a = sys.NewProcess("a");
        using ProcessAddressSpace b = sys.NewProcess("b");
        ulong va = a.Mmap(4 * Page), vb = b.Mmap(4 * Page);
        Assert.Equal(Errno.None, a.Write(va, "from-a!!"u8));
        Assert.Equal(Errno.None, a.Write(va + Page, new byte[8])); // touch the destination page (untranslated DMA does not fault pages in)
        Assert.Equal(Errno.None, b.Write(vb, "from-b!!"u8));
        Assert.Equal(Errno.None, b.Write(vb + Page, new byte[8]));

        AccelClient ca = sys.Open(a), cb = sys.Open(b);
        Assert.NotEqual(ca.Queue.Pasid, cb.Queue.Pasid);
        Assert.NotEqual(0u, ca.Queue.Pasid);

        int sa = ca.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va, va + Page, 8));
        int sb = cb.Submit(new AccelDescriptor(AccelOp.Xor, AccelStatus.Pending, vb, vb + Page, 8, Key: 0x20));

        // Both processes use the same numbers (va == vb) for different pages: each queue reads its own. An area only
        // b has (mapped after a's last mmap) does not exist for a's PASID: a's descriptor naming it fails, b's succeeds.
        Assert.Equal(va, vb);
        ulong onlyB = b.Mmap(Page);
        Assert.Equal(Errno.None, b.Write(onlyB, "secret-b"u8));
        int sx = ca.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, onlyB, va + Page + 64, 8));
        int sy = cb.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, onlyB, vb + Page + 64, 8));
        Assert.Equal(4, sys.Engine.Service());

        Assert.Equal(AccelStatus.Success, ca.Read(sa).Status);
        Assert.Equal(AccelStatus.Success, cb.Read(sb).Status);
        Assert.Equal(AccelStatus.TranslationFault, ca.Read(sx).Status);
        Assert.Equal(AccelStatus.Success, cb.Read(sy).Status);
        byte[] got = new byte[8];
        Assert.Equal(Errno.None, a.Read(va + Page, got));
        Assert.Equal("from-a!!"u8.ToArray(), got);
        Assert.Equal(Errno.None, b.Read(vb + Page, got));
        Assert.Equal("FROM\rB\u0001\u0001"u8.ToArray(), got);
        Assert.Equal(Errno.None, a.Read(va + Page + 64, got));
        Assert.Equal(new byte[8], got); // a's page untouched by its failed descriptor
        Assert.Equal(Errno.None, b.Read(vb + Page + 64, got));
        Assert.Equal("secret-b"u8.ToArray(), got);
        Assert.Equal(UacceCommands.PollIn | UacceCommands.PollRdNorm, ca.Queue.Poll());
        Assert.Equal(0, ca.Queue.Poll());
    }

    [Fact]
    public void A_descriptor_outside_any_mapping_or_against_the_vma_completes_with_an_error_and_the_ring_goes_on()
    {
        using AccelSystem sys = AccelSystem.Create();
        using ProcessAddressSpace a = sys.NewProcess("a");
        ulong va = a.Mmap(2 * Page);
        ulong ro = a.Mmap(Page, VmProt.Read);
        Assert.Equal(Errno.None, a.Write(va, "data"u8));
        Assert.Equal(Errno.None, a.Read(ro, new byte[4]));
        AccelClient c = sys.Open(a);
        int s0 = c.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va + (16 * Page), va, 4)); // nothing mapped there
        int s1 = c.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va, ro, 4)); // read-only destination
        int s2 = c.Submit(new AccelDescriptor((AccelOp)9, AccelStatus.Pending, va, va, 4));
        int s3 = c.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va, va + 8, 4));
        Assert.Equal(4, sys.Engine.Service());
        Assert.Equal(AccelStatus.TranslationFault, c.Read(s0).Status);
        Assert.Equal(AccelStatus.TranslationFault, c.Read(s1).Status);
        Assert.Equal(AccelStatus.BadDescriptor, c.Read(s2).Status);
        Assert.Equal(AccelStatus.Success, c.Read(s3).Status);
        byte[] got = new byte[4];
        Assert.Equal(Errno.None, a.Read(ro, got));
        Assert.Equal(new byte[4], got);
    }

    [Fact]
    public void A_never_touched_page_is_faulted_in_through_pri_and_the_descriptor_completes_after_the_response()
    {
        using AccelSystem sys = AccelSystem.Create(mode: AccelDmaMode.Ats);
        using ProcessAddressSpace a = sys.NewProcess("a");
        ulong va = a.Mmap(2 * Page);
        Assert.Equal(Errno.None, a.Write(va, "pri!"u8));
        AccelClient c = sys.Open(a);
        int s = c.Submit(new AccelDescriptor(AccelOp.Copy, AccelStatus.Pending, va, va + Page, 4)); // destination never touched

        // The engine's write gets a page request; the driver's PRQ handler queues it on the unit's iopf queue, whose
        // worker faults the page in through the mm and answers Success; the engine retries on its next service and
        // completes. While no response has arrived the descriptor stays pending at the head and the queue waits.
        // The worker runs on its own thread: it may answer before the engine's immediate retry, or only later.
        Assert.False(a.TryTranslate(va + Page, out _));
        int done = sys.Engine.Service();
        if (done == 0)
        {
            Assert.Equal(AccelStatus.Pending, c.Read(s).Status);
            Assert.True(sys.Engine.Queues[0].Waiting);
            Assert.Equal(0, sys.Engine.Queues[0].Head);
            Assert.Equal(Errno.None, sys.Platform.Iommu.IopfQueueFlushDev(sys.Device)); // waits for the answer
            done = sys.Engine.Service();
        }

        Assert.Equal(1, done);
        Assert.True(a.TryTranslate(va + Page, out _)); // only the iopf path can have populated it: the CPU never touched it

        Assert.Equal(AccelStatus.Success, c.Read(s).Status);
        byte[] got = new byte[4];
        Assert.Equal(Errno.None, a.Read(va + Page, got));
        Assert.Equal("pri!"u8.ToArray(), got);
        Assert.False(sys.Engine.Queues[0].Waiting);
    }
}
