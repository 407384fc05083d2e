using Iommu.Mm;

namespace Vfio.Type1.Memory;

/// <summary>An open VFIO file (container, group or device) with a reference per file descriptor that names it.</summary>
/// <remarks>
/// <para>Thread safety: reference counting is atomic; <see cref="Release"/> runs once, on the last close.</para>
/// <para>Lifetime: <c>Close()</c> is the kernel-shaped call (<c>close(fd)</c>, an errno);
/// <see cref="Dispose"/> is the .NET shape of the same: it closes the descriptor this object was
/// opened as when that descriptor still names it, and otherwise does nothing, so a second Dispose,
/// a Dispose after Close or after the process exited, and a Dispose after the platform was
/// disposed are all harmless and never throw. Descriptors duplicated by fork keep the file open
/// until they close too, as in the kernel.</para>
/// </remarks>
public abstract class VfioFile : IDisposable, IFileReference
{
    private int _fileRefs;

    /// <summary>Closes the descriptor this object was opened as, if it is still open (see the remarks); idempotent, never throws.</summary>
    public void Dispose()
    {
        // close(fd) only while fd still names this file (not after a close and a reuse of the
        // number); nothing after exit or after the platform's memory was disposed.
        (ProcessAddressSpace? owner, int fd) = OpenedAs;
        try
        {
            if (owner is { Exited: false } && ReferenceEquals(owner.GetFile(fd), this))
            {
                _ = owner.Close(fd);
            }
        }
        catch (ObjectDisposedException)
        {
            // The platform is gone, and with it everything the file held.
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>The process and descriptor this object was (last) opened as; no owner when it is not open.</summary>
    private protected abstract (ProcessAddressSpace? Owner, int Fd) OpenedAs { get; }

    /// <summary>Open descriptors naming this file.</summary>
    public int FileRefs => Volatile.Read(ref _fileRefs);

    internal void OpenFileRef() => Volatile.Write(ref _fileRefs, 1);

    internal void AddFileRef() => Interlocked.Increment(ref _fileRefs);

    void IFileReference.GetFile() => AddFileRef();

    void IFileReference.PutFile() => PutFileRef();

    internal void PutFileRef()
    {
        if (Interlocked.Decrement(ref _fileRefs) == 0)
        {
            Release();
        }
    }

    /// <summary>Called when the last descriptor closes (the file's <c>release</c>).</summary>
    private protected abstract void Release();
}
