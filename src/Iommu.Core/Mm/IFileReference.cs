namespace Iommu.Mm;

/// <summary>
/// An open file whose descriptors a <see cref="ProcessAddressSpace"/> counts (<c>struct file</c>'s
/// <c>f_count</c>): fork takes a reference per inherited descriptor, close drops one.
/// </summary>
/// <remarks>
/// Lets the process model live below VFIO: the fd table holds any object, and only files that
/// implement this interface (VFIO's container, group and device files) are told of forks and closes.
/// </remarks>
public interface IFileReference
{
    /// <summary>Takes one more reference (a descriptor was duplicated by fork).</summary>
    [KernelSymbol("get_file")]
    void GetFile();

    /// <summary>Drops one reference (a descriptor was closed); the file is released at zero.</summary>
    [KernelSymbol("fput")]
    void PutFile();
}
