using Iommu.Mm;
using Iommu.Reliability.Tests.Infrastructure;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

internal static partial class BadInputMatrix
{
    /// <summary>Iommu.Core's process model (Iommu.Mm): processes, their page tables and notifiers, the host page pool.</summary>
    private static IEnumerable<BadInputRow> Mm() =>
    [
        // ProcessAddressSpace
        X<ArgumentNullException>("ProcessAddressSpace..ctor", "null page allocator", _ => new ProcessAddressSpace(null!)),
        X<ArgumentOutOfRangeException>("ProcessAddressSpace.Mmap", "length 0", c => c.Proc.Mmap(0)),
        X<ArgumentOutOfRangeException>("ProcessAddressSpace.Mmap", "length 2^64-1 (rounding overflows)", c => c.Proc.Mmap(ulong.MaxValue)),
        X<ArgumentOutOfRangeException>("ProcessAddressSpace.Mmap", "length above the user address space", c => c.Proc.Mmap(1UL << 60)),
        X<ArgumentException>("ProcessAddressSpace.Munmap", "unaligned address", c => { c.Proc.Munmap(c.Proc.Mmap(0x2000) + 1, 0x1000); return null; }),
        X<ArgumentOutOfRangeException>("ProcessAddressSpace.Munmap", "length 0", c => { c.Proc.Munmap(c.Proc.Mmap(0x2000), 0); return null; }),
        Ok("ProcessAddressSpace.Munmap", "huge length (must not walk 2^34 pages)", c => c.Proc.Munmap(c.Proc.Mmap(0x2000), 1UL << 38)),
        X<ArgumentOutOfRangeException>("ProcessAddressSpace.Munmap", "range wraps 2^64", c => { c.Proc.Munmap(ulong.MaxValue - 0xfff, 0x2000); return null; }),
        E("ProcessAddressSpace.Mprotect", "unaligned address", c => c.Proc.Mprotect(c.Proc.Mmap(0x2000) + 8, 0x1000, VmProt.Read), Errno.EINVAL),
        E("ProcessAddressSpace.Mprotect", "range wraps 2^64", c => c.Proc.Mprotect(ulong.MaxValue - 0xfff, 0x2000, VmProt.Read), Errno.ENOMEM),
        E("ProcessAddressSpace.Mprotect", "unmapped address", c => c.Proc.Mprotect(0x1000, 0x1000, VmProt.Read), Errno.ENOMEM),
        E("ProcessAddressSpace.Mprotect", "unknown PROT bit", c => c.Proc.Mprotect(c.Proc.Mmap(0x1000), 0x1000, (VmProt)0x10), Errno.EINVAL),
        E("ProcessAddressSpace.Mprotect", "length 0 (nothing to do)", c => c.Proc.Mprotect(0x1000, 0, VmProt.Read), Errno.None),
        E("ProcessAddressSpace.Mlock", "unmapped address", c => c.Proc.Mlock(0x1000, 0x1000), Errno.ENOMEM),
        E("ProcessAddressSpace.Mlock", "range wraps 2^64", c => c.Proc.Mlock(ulong.MaxValue - 0xfff, 0x2000), Errno.EINVAL),
        E("ProcessAddressSpace.Mlock", "above TASK_SIZE, no wrap", c => c.Proc.Mlock(0x8000_0000_0000UL, 0x1000), Errno.ENOMEM),
        E("ProcessAddressSpace.Mlock", "RLIMIT_MEMLOCK 0 without CAP_IPC_LOCK", c => { c.Proc.CapIpcLock = false; c.Proc.RlimitMemlock = 0; return c.Proc.Mlock(c.Proc.Mmap(0x1000), 0x1000); }, Errno.EPERM),
        X<ArgumentException>("ProcessAddressSpace.Munmap", "splits a huge-page area", c => { c.Proc.Munmap(c.Proc.Mmap(2 * Sizes.MiB, kind: VmaKind.HugePage), 0x1000); return null; }),
        E("ProcessAddressSpace.Write", "unmapped address", c => c.Proc.Write(0x1000, new byte[8]), Errno.EFAULT),
        E("ProcessAddressSpace.Write", "range wraps 2^64", c => c.Proc.Write(ulong.MaxValue - 3, new byte[8]), Errno.EFAULT),
        E("ProcessAddressSpace.Write", "read-only memory", c => c.Proc.Write(c.Proc.Mmap(0x1000, VmProt.Read), new byte[8]), Errno.EFAULT),
        E("ProcessAddressSpace.Read", "NULL", c => c.Proc.Read(0, new byte[8]), Errno.EFAULT),
        E("ProcessAddressSpace.Read", "PROT_NONE memory", c => c.Proc.Read(c.Proc.Mmap(0x1000, VmProt.None), new byte[8]), Errno.EFAULT),
        V("ProcessAddressSpace.TryTranslate", "address 2^64-1", c => c.Proc.TryTranslate(ulong.MaxValue, out _), false),
        X<InvalidOperationException>("ProcessAddressSpace.Fork", "after exit", c => { c.Proc.Exit(); return c.Proc.Fork(); }),
        X<ArgumentNullException>("ProcessAddressSpace.InstallFile", "null", c => c.Proc.InstallFile(null!)),
        V("ProcessAddressSpace.GetFile", "fd -1", c => c.Proc.GetFile(-1), null),
        E("ProcessAddressSpace.Close", "fd never opened", c => c.Proc.Close(12345), Errno.EBADF),
        E("ProcessAddressSpace.PinUserPage", "unmapped address", c => c.Proc.PinUserPage(0x1000, false, out _, out _), Errno.EFAULT),
        E("ProcessAddressSpace.PinUserPage", "address 2^64-1", c => c.Proc.PinUserPage(ulong.MaxValue, false, out _, out _), Errno.EFAULT),
        E("ProcessAddressSpace.PinUserPage", "write pin of read-only memory", c => c.Proc.PinUserPage(c.Proc.Mmap(0x1000, VmProt.Read), true, out _, out _), Errno.EFAULT),
        E("ProcessAddressSpace.PinUserPage", "after exit", c => { ulong va = c.Proc.Mmap(0x1000); c.Proc.Exit(); return c.Proc.PinUserPage(va, false, out _, out _); }, Errno.ENODEV),
        X<InvalidOperationException>("ProcessAddressSpace.UnpinUserPage", "frame never pinned", c => { c.Proc.UnpinUserPage(0x1234, false); return null; }),
        Ok("ProcessAddressSpace.UnpinUserPage", "reserved frame (nothing to drop)", c => c.Proc.UnpinUserPage(ulong.MaxValue, true)),
        V("ProcessAddressSpace.AddLockedVm", "a charge and its reversal balance", c => { long before = c.Proc.LockedVm; c.Proc.AddLockedVm(long.MaxValue / 2); c.Proc.AddLockedVm(-(long.MaxValue / 2)); return c.Proc.LockedVm - before; }, 0L),
        V("ProcessAddressSpace.Walk", "address 2^64-1 (nothing above the user half)", c => c.Proc.Walk(ulong.MaxValue).Present, false),
        V("ProcessAddressSpace.Walk", "never-mapped address", c => c.Proc.Walk(0x1000).Pte, 0UL),
        X<ArgumentNullException>("ProcessAddressSpace.MmuNotifierRegister", "null", c => { c.Proc.MmuNotifierRegister(null!); return null; }),
        X<ArgumentException>("ProcessAddressSpace.MmuNotifierRegister", "registered twice", c => { var n = new NullNotifier(); c.Proc.MmuNotifierRegister(n); c.Proc.MmuNotifierRegister(n); return null; }),
        X<InvalidOperationException>("ProcessAddressSpace.MmuNotifierRegister", "after exit", c => { c.Proc.Exit(); c.Proc.MmuNotifierRegister(new NullNotifier()); return null; }),
        X<ArgumentNullException>("ProcessAddressSpace.MmuNotifierUnregister", "null", c => { c.Proc.MmuNotifierUnregister(null!); return null; }),
        Ok("ProcessAddressSpace.MmuNotifierUnregister", "never registered (nothing)", c => c.Proc.MmuNotifierUnregister(new NullNotifier())),
        E("ProcessAddressSpace.Close", "closed twice", c => { int fd = c.Proc.InstallFile(new object()); c.Proc.Close(fd).ThrowIfError(); return c.Proc.Close(fd); }, Errno.EBADF),

        // HostPageAllocator
        X<ArgumentNullException>("HostPageAllocator..ctor", "null memory", _ => new HostPageAllocator(null!, 0, 0x2000)),
        X<ArgumentOutOfRangeException>("HostPageAllocator..ctor", "unaligned base", c => new HostPageAllocator(c.Memory, 0x800, 0x10000)),
        X<ArgumentOutOfRangeException>("HostPageAllocator..ctor", "one page", c => new HostPageAllocator(c.Memory, 0x1000, 0x1000)),
        X<ArgumentOutOfRangeException>("HostPageAllocator..ctor", "range past the end of memory", c => new HostPageAllocator(c.Memory, 16 * Sizes.GiB, 0x10000)),
        X<ArgumentNullException>("HostPageAllocator.ForPlatform", "null platform", _ => HostPageAllocator.ForPlatform(null!)),
        E("HostPageAllocator.Allocate", "more pages than the pool", c => c.Pages.Allocate(1UL << 40, 1, out _), Errno.ENOMEM),
        E("HostPageAllocator.Allocate", "alignment that overflows", c => c.Pages.Allocate(1, 1UL << 60, out _), Errno.ENOMEM),
        X<ArgumentOutOfRangeException>("HostPageAllocator.Allocate", "zero pages", c => c.Pages.Allocate(0, 1, out _)),
        X<InvalidOperationException>("HostPageAllocator.Unpin", "pfn never pinned", c => { c.Pages.Unpin(0x1234); return null; }),
        Ok("HostPageAllocator.Get", "pfn never allocated (ignored)", c => c.Pages.Get(ulong.MaxValue)),
        Ok("HostPageAllocator.Put", "pfn never allocated (ignored)", c => c.Pages.Put(ulong.MaxValue)),
        Ok("HostPageAllocator.Pin", "pin and unpin of a foreign pfn balance", c => { c.Pages.Pin(7); c.Pages.Unpin(7); }),
        V("HostPageAllocator.PinCount", "pfn never pinned", c => c.Pages.PinCount(ulong.MaxValue), 0),
        V("HostPageAllocator.RefCount", "pfn never allocated", c => c.Pages.RefCount(ulong.MaxValue), 0),
    ];

    private sealed class NullNotifier : MmuNotifier
    {
        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end)
        {
        }
    }
}
