using Iommu;
using Iommu.Memory;
using Iommu.Mm;

namespace Uacce;

/// <summary>
/// One open file of a uacce device and the hardware queue behind it (<c>struct uacce_queue</c>): tagged with
/// the opener's PASID, started by <see cref="UacceCommands.StartQ"/>, mapped into a process with <see cref="Mmap"/>,
/// released when its last descriptor closes (<see cref="ProcessAddressSpace.Close"/>, across forks).
/// </summary>
/// <remarks>
/// States (uacce.c, 5.15): INIT →(START_Q)→ STARTED →(PUT_Q, release, remove)→ ZOMBIE; nothing leaves ZOMBIE. A queue of an
/// SVA device holds exactly one SVA bind of its opener from open until PUT_Q+release or remove.
/// </remarks>
[KernelSymbol("struct uacce_queue")]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711", Justification = "Mirrors struct uacce_queue: a hardware queue, not a .NET collection.")]
public sealed class UacceQueue : IFileReference
{
    private readonly UacceVmArea?[] _qfrs = new UacceVmArea?[UacceCommands.MaxRegion];
    private readonly List<(ProcessAddressSpace Mm, UacceVmArea Vma)> _mappings = [];
    private int _refs = 1;

    internal UacceQueue(UacceDevice uacce, ProcessAddressSpace mm)
    {
        Uacce = uacce;
        Mm = mm;
    }

    /// <summary>The device.</summary>
    public UacceDevice Uacce { get; }

    /// <summary>The process that opened the queue (whose address space its DMA uses).</summary>
    public ProcessAddressSpace Mm { get; }

    /// <summary>The PASID the queue's DMA carries: the opener's (SVA devices), else 0. Kept after the queue became a zombie.</summary>
    public uint Pasid { get; private set; }

    /// <summary>The SVA bind the queue holds, or null (no SVA, or after PUT+release or remove).</summary>
    public IommuSva? Handle { get; private set; }

    /// <summary>The state.</summary>
    public UacceQueueState State { get; internal set; } = UacceQueueState.Init;

    /// <summary>Driver data (<c>uacce_queue.priv</c>).</summary>
    public object? Private { get; set; }

    /// <summary>Whether the last descriptor closed and the queue was released.</summary>
    public bool Released { get; private set; }

    /// <summary>
    /// The region records by type (<c>qfrs[]</c>), set by a successful <see cref="Mmap"/> and never cleared: 5.15–6.3's
    /// VMA close frees the record but leaves this pointer, so a region is mapped at most once per queue.
    /// </summary>
    public IReadOnlyList<UacceVmArea?> Regions => [.. _qfrs];

    /// <summary>
    /// The raw ioctl entry point (<c>uacce_fops_unl_ioctl</c>): <see cref="UacceCommands.StartQ"/>,
    /// <see cref="UacceCommands.PutQ"/>, anything else to the driver's <see cref="IUacceIoctlOps"/>.
    /// </summary>
    /// <param name="cmd">The command number.</param>
    /// <param name="arg">The argument bytes (ignored by START_Q and PUT_Q).</param>
    /// <returns>
    /// 0; -ENXIO on a zombie queue (every command); START_Q: -EINVAL unless the queue is INIT (so a second
    /// START_Q fails), else the driver's <see cref="IUacceOps.StartQueue"/> errno (the queue stays INIT);
    /// PUT_Q: 0 (stops a started queue, releases its hardware, the queue becomes a zombie but keeps its bind until release);
    /// other commands: -EINVAL without <see cref="IUacceIoctlOps"/>, else the driver's errno.
    /// </returns>
    /// <remarks>Under the device's mutex (not the queue's), as in 5.15. Never throws for any <paramref name="cmd"/> and bytes.</remarks>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    [KernelSymbol("uacce_fops_unl_ioctl")]
    public Errno Ioctl(uint cmd, ReadOnlySpan<byte> arg)
    {
        using PhysicalMemory.AccessScope guard = Uacce.Core.Platform.Memory.EnterAccess();
        lock (Uacce.Mutex)
        {
            if (!IsValid)
            {
                return ErrorDetail.Fail(Errno.ENXIO, $"{Uacce.Name}: the queue of {Mm.Name} is a zombie");
            }

            switch (cmd)
            {
                case UacceCommands.StartQ:
                    return StartQueue();
                case UacceCommands.PutQ:
                    PutQueue();
                    return Errno.None;
                default:
                    return Uacce.Ops is IUacceIoctlOps ops
                        ? ops.Ioctl(this, cmd, arg)
                        : ErrorDetail.Fail(Errno.EINVAL, $"{Uacce.Name}: unknown ioctl 0x{cmd:x}");
            }
        }
    }

    /// <summary>
    /// Maps region <paramref name="pgoff"/> of the queue into <paramref name="mm"/> (<c>mmap(2)</c> → <c>uacce_fops_mmap</c>);
    /// the driver's <see cref="IUacceMmapOps.Mmap"/> backs it.
    /// </summary>
    /// <param name="mm">The calling process (any holder of the file, e.g. a forked child).</param>
    /// <param name="pgoff">The page offset: the region type (0 MMIO, 1 DUS).</param>
    /// <param name="length">Bytes (rounded up to pages).</param>
    /// <param name="vaddr">The user address, or 0.</param>
    /// <returns>
    /// 0; -EINVAL for a zero length, -ENOMEM for one beyond the user address space (mmap's own checks, first);
    /// -EINVAL for <paramref name="pgoff"/> ≥ 2; -ENXIO on a zombie queue;
    /// -EEXIST when that region was mapped before (also after its munmap: the 5.15–6.3 quirk); -EINVAL without
    /// <see cref="IUacceMmapOps"/>; else the driver's errno. Failures map nothing.
    /// </returns>
    /// <remarks>
    /// The area is shared, read-write and <c>VM_PFNMAP</c> onto what the driver remapped, and <c>VM_DONTCOPY</c> as in 5.15:
    /// a forked child does not get it. <c>mremap</c> is not modelled.
    /// </remarks>
    /// <exception cref="InvalidOperationException"><paramref name="mm"/> has exited.</exception>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    [KernelSymbol("uacce_fops_mmap")]
    public Errno Mmap(ProcessAddressSpace mm, ulong pgoff, ulong length, out ulong vaddr)
    {
        using PhysicalMemory.AccessScope guard = Uacce.Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(mm);
        vaddr = 0;
        // do_mmap: len 0 → -EINVAL; PAGE_ALIGN(len) overflowing or len > TASK_SIZE (get_unmapped_area) → -ENOMEM.
        if (length == 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "mmap length 0");
        }

        if (length > 0x7FFF_FFFF_F000UL)
        {
            return ErrorDetail.Fail(Errno.ENOMEM, $"mmap length {length} exceeds the user address space");
        }

        if (pgoff >= UacceCommands.MaxRegion)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{Uacce.Name} has no region at page offset {pgoff}");
        }

        if (mm.Exited)
        {
            throw new InvalidOperationException($"{mm.Name} has exited");
        }

        var type = (UacceQueueFileRegionType)pgoff;
        length = (length + UacceCore.PageSize - 1) & ~(UacceCore.PageSize - 1);
        lock (Uacce.Mutex)
        {
            if (!IsValid)
            {
                return ErrorDetail.Fail(Errno.ENXIO, $"{Uacce.Name}: the queue of {Mm.Name} is a zombie");
            }

            if (_qfrs[(int)type] is not null)
            {
                return ErrorDetail.Fail(Errno.EEXIST, $"{Uacce.Name}: the {type} region of this queue was mapped before");
            }

            if (Uacce.Ops is not IUacceMmapOps ops)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{Uacce.Name}'s driver maps no region");
            }

            var vma = new UacceVmArea(type, length);
            Errno e = ops.Mmap(this, vma);
            if (e != Errno.None)
            {
                return ErrorDetail.Fail(e, $"{Uacce.Name}'s driver refused to map the {type} region ({length} bytes)");
            }

            // VM_DONTCOPY (| VM_WIPEONFORK): a forked child gets neither region; it would otherwise keep the doorbell and
            // ring after the queue's release, when the driver hands the same hardware queue to another opener.
            vma.Start = vma.PhysicalBase is ulong pa
                ? mm.Mmap(length, VmProt.ReadWrite, VmaKind.PfnMap, shared: true, physicalBase: pa, dontCopy: true)
                : mm.Mmap(length, VmProt.ReadWrite, VmaKind.Anonymous, shared: true, dontCopy: true);
            _qfrs[(int)type] = vma;
            _mappings.Add((mm, vma));
            vaddr = vma.Start;
            return Errno.None;
        }
    }

    /// <summary>Polls the queue (<c>uacce_fops_poll</c>).</summary>
    /// <returns><see cref="UacceCommands.PollIn"/> | <see cref="UacceCommands.PollRdNorm"/> when the driver's <see cref="IUacceOps.IsQUpdated"/> says so; 0 otherwise and for a zombie queue.</returns>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    /// <remarks>
    /// Under the device's mutex, as the later kernel's fix for parent removal does (5.15 takes no lock): a PUT_Q or
    /// remove between the validity check and the driver's call would let a zombie queue ask the driver about a hardware
    /// queue it no longer owns, and the sample's driver would clear another opener's completion flag.
    /// </remarks>
    [KernelSymbol("uacce_fops_poll")]
    public int Poll()
    {
        using PhysicalMemory.AccessScope guard = Uacce.Core.Platform.Memory.EnterAccess();
        lock (Uacce.Mutex)
        {
            IUacceOps? ops = Uacce.Ops;
            return IsValid && ops is not null && ops.IsQUpdated(this) ? UacceCommands.PollIn | UacceCommands.PollRdNorm : 0;
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Uacce.Name} queue of {Mm.Name} (PASID {Pasid}, {State})";

    void IFileReference.GetFile() => Interlocked.Increment(ref _refs);

    // uacce_fops_release: under the device mutex, (revoke the mappings: model), PUT, unbind, unlink.
    void IFileReference.PutFile()
    {
        if (Interlocked.Decrement(ref _refs) != 0)
        {
            return;
        }

        lock (Uacce.Mutex)
        {
            // In the kernel every mapping holds a file reference (vma->vm_file), so release only runs once the
            // regions are unmapped. The process model has no vm_file: the release revokes what is still mapped
            // (as remove does) before the driver gets the hardware queue back, or a process that closed its fd
            // would keep a doorbell and ring the driver hands to the next opener (DMA with that opener's PASID).
            ZapMappings();
            PutQueue();
            Unbind();
            Uacce.QueueList.Remove(this);
            Released = true;
        }
    }

    private bool IsValid => State is UacceQueueState.Init or UacceQueueState.Started;

    internal void Bind(IommuSva handle, uint pasid)
    {
        Handle = handle;
        Pasid = pasid;
    }

    // uacce_start_queue.
    private Errno StartQueue()
    {
        if (State != UacceQueueState.Init)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"{Uacce.Name}: the queue of {Mm.Name} is {State}, not INIT");
        }

        Errno e = Uacce.Ops!.StartQueue(this);
        if (e != Errno.None)
        {
            return ErrorDetail.Fail(e, $"{Uacce.Name}'s driver could not start the queue of {Mm.Name}");
        }

        State = UacceQueueState.Started;
        return Errno.None;
    }

    // uacce_put_queue: stop if started, release the hardware if INIT or STARTED, become a zombie.
    internal void PutQueue()
    {
        IUacceOps? ops = Uacce.Ops;
        if (State == UacceQueueState.Started && ops is not null)
        {
            ops.StopQueue(this);
        }

        if (IsValid && ops is not null)
        {
            ops.PutQueue(this);
        }

        State = UacceQueueState.Zombie;
    }

    // uacce_unbind_queue.
    internal void Unbind()
    {
        if (Handle is IommuSva h)
        {
            Handle = null;
            Uacce.Core.Platform.Iommu.SvaUnbindDevice(h);
        }
    }

    // unmap_mapping_range of the device inode at remove: the model unmaps the areas still there.
    internal void ZapMappings()
    {
        foreach ((ProcessAddressSpace mm, UacceVmArea vma) in _mappings)
        {
            if (mm.Exited)
            {
                continue;
            }

            foreach (ProcessMemoryArea a in mm.Areas)
            {
                if (a.Start < vma.Start + vma.Length && a.End > vma.Start)
                {
                    mm.Munmap(vma.Start, vma.Length);
                    break;
                }
            }
        }

        _mappings.Clear();
    }
}
