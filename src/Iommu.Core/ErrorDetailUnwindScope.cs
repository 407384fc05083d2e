namespace Iommu;

/// <summary>
/// The scope <see cref="ErrorDetail.PreserveWhileUnwinding"/> returns: disposing it restores the
/// failure detail recorded when it was opened, so cleanup cannot replace or forget it.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1815", Justification = "A scope token: never compared.")]
public readonly struct ErrorDetailUnwindScope : IDisposable
{
    private readonly ErrorDetail.State? _state;
    private readonly Errno _errno;
    private readonly string? _message;

    internal ErrorDetailUnwindScope(ErrorDetail.State state, Errno errno, string? message)
    {
        _state = state;
        _errno = errno;
        _message = message;
    }

    /// <summary>Puts the detail recorded when the scope opened back (call it on the thread that opened it).</summary>
    public void Dispose()
    {
        if (_state is not null)
        {
            _state.Errno = _errno;
            _state.Message = _message;
        }
    }
}
