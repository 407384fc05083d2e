using Uacce;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>A uacce driver that grants every queue and records the last area it was asked to map.</summary>
internal sealed class BadInputUacceOps : IUacceOps, IUacceMmapOps
{
    public UacceVmArea? LastVma { get; private set; }

    public Errno GetQueue(UacceDevice uacce, uint pasid, UacceQueue queue) => Errno.None;

    public void PutQueue(UacceQueue queue)
    {
    }

    public Errno StartQueue(UacceQueue queue) => Errno.None;

    public void StopQueue(UacceQueue queue)
    {
    }

    public bool IsQUpdated(UacceQueue queue) => false;

    public Errno Mmap(UacceQueue queue, UacceVmArea vma)
    {
        LastVma = vma;
        return Errno.None;
    }
}
