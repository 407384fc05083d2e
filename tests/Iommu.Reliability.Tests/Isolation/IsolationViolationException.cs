namespace Iommu.Reliability.Tests.Isolation;

/// <summary>The library disagreed with the reference model.</summary>
public sealed class IsolationViolationException : Exception
{
    public IsolationViolationException()
    {
    }

    public IsolationViolationException(string message)
        : base(message)
    {
    }

    public IsolationViolationException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
